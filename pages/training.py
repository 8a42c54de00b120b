import streamlit as st
st.title("Training")
