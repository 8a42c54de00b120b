"""pneumo: find and outline pneumothorax on chest X-rays.

Stages, one module each: ``sources`` (folders, SIIM DICOM + RLE, demo phantoms) ->
``split`` -> ``pack`` (HDF5) -> ``augment`` / ``data`` (tf.data) -> ``model`` ->
``train`` -> ``evaluate`` -> ``review``. Modules that need TensorFlow import it
themselves; importing ``pneumo`` does not.
"""
__version__ = "0.1.0"
