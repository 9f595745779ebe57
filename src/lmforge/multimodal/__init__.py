"""Image–text models: data (easy-VQA), a CLIP-style contrastive model, its training and evaluation.

- data.py: easy-VQA images with shape/colour attributes, captions and questions (train/test as shipped)
"""

from lmforge.multimodal.data import ImageSet, load_easy_vqa, read_image

__all__ = ["ImageSet", "load_easy_vqa", "read_image"]
