"""Augmentation page: the blog's figure of 5, live, from the same function training uses."""
from __future__ import annotations

import numpy as np
import streamlit as st

from pneumo.config import AugmentConfig, to_dict
from pneumo_app import common



@st.cache_data(show_spinner=False, max_entries=64)
def _preview(path: str, mtime: float, split: str, index: int, config: dict, n: int, seed: int):
    # TensorFlow is imported here, on first use, so the other pages never pay for it.
    from pneumo.train import augment
    from pneumo.config import from_dict

    X, Y, _ = common.read_samples(path, split, [index])
    return augment.preview(X[0], Y[0], from_dict(AugmentConfig, config), n=n, seed=seed)


def image_ui(info) -> tuple[str, int]:
    """Pick a split and an image; a positive one by default (the outline shows the geometry)."""
    c1, c2, c3 = st.columns([1, 1, 2])
    splits = [s for s in common.SPLITS if info.counts[s]]
    split = c1.selectbox("Split", splits, key="aug_split")
    pos = common.positives(info.path, split)
    positive_only = c2.checkbox("Positives only", True, key="aug_positive_only") and bool(pos.any())
    candidates = [int(i) for i in pos.nonzero()[0]] if positive_only else list(range(len(pos)))
    k = c3.number_input(
        f"Image ({len(candidates)} {'positive ' if positive_only else ''}in {split})",
        1, len(candidates), 1, key="aug_index",
    )
    return split, candidates[min(int(k), len(candidates)) - 1]


st.title("Augmentation")
st.write(
    "Random paired geometry applied to each training image and its mask, drawn by "
    "`pneumo.train.augment.preview`: exactly what training does. The defaults are the blog's "
    "`ImageDataGenerator` ranges."
)
info = common.pack_picker("Pack", key="aug_pack")
if info is None:
    st.stop()
split, index = image_ui(info)
with st.container(border=True):
    config = common.augment_config_ui("aug")
    c1, c2 = st.columns(2)
    n = c1.slider("Augmented copies", 1, 10, 5, key="aug_n")
    seed = c2.number_input("Seed", 0, 2**31 - 1, 0, key="aug_seed")

X, Y, ids = common.read_samples(info.path, split, [index])
with common.user_errors(), st.spinner("Augmenting (first time loads TensorFlow)..."):
    images, masks = _preview(str(info.path), common.mtime(info.path), split, index, to_dict(config), int(n), int(seed))

st.markdown(f"**{common.md_escape(ids[0])}** ({split} #{index}), mask outlined in green")
per_row = 6
panels = [(common.outlined(X[0], Y[0]), "original")] + [
    (common.outlined(im, m), f"augmented {i + 1}") for i, (im, m) in enumerate(zip(images, masks))
]
for start in range(0, len(panels), per_row):
    cols = st.columns(per_row)
    for col, (panel, caption) in zip(cols, panels[start : start + per_row]):
        col.image(panel, caption=caption, width="stretch")
area = [int(np.count_nonzero(m)) for m in masks]
st.caption(
    f"Mask area: original {int(np.count_nonzero(Y[0]))} px; augmented "
    + ", ".join(str(a) for a in area)
    + " px. Masks stay binary; the shape moves with the image."
)
