"""imgaug augmentation applied identically to an image and its instance masks (Matterport's rule).

Only the geometric augmenters in `MASK_AUGMENTERS` (and the containers around them) touch the masks;
colour, blur and noise augmenters change the image alone. One deterministic copy of the augmenter,
seeded from the caller's numpy Generator, is applied to both, so a seeded pipeline repeats exactly
and the image and masks move together.

imgaug (the `imaug` fork, import name `imgaug`) is imported on first use: it pulls in OpenCV.
"""
import numpy as np

from mrcnn_tf.errors import MrcnnError

# Augmenters that are safe to apply to masks (Matterport's list).
MASK_AUGMENTERS = ("Sequential", "SomeOf", "OneOf", "Sometimes", "Fliplr", "Flipud", "CropAndPad", "Affine",
                   "PiecewiseAffine")


class AugmentationError(MrcnnError, ValueError):
    """An augmenter that cannot be used for instance segmentation (e.g. it changes the image size)."""


def _mask_hook(images, augmenter, parents, default):
    """imgaug activator: run an augmenter on the masks only if it is in MASK_AUGMENTERS."""
    return augmenter.__class__.__name__ in MASK_AUGMENTERS


def augment_image_and_masks(augmentation, image, masks, rng):
    """Apply `augmentation` to `image` and, where geometric, to `masks`, with the same random draw.

    Args:
        augmentation: an imgaug augmenter (e.g. `lisc_augmentation()`).
        image: uint8 [H, W, C].
        masks: bool [H, W, N] instance masks (N may be 0).
        rng: numpy Generator; the augmenter is seeded from it, so the result is a function of its state.

    Returns:
        image: uint8 [H, W, C]; masks: bool [H, W, N]. Instances may become empty (pushed out of the
        frame): the caller drops them.

    Raises:
        AugmentationError: the augmenter changed the image or mask shape.
    """
    import imgaug

    det = augmentation.to_deterministic()
    # Seeding a deterministic copy needs deterministic_too, or imgaug leaves its state alone.
    det.seed_(int(rng.integers(0, 2 ** 31 - 1)), deterministic_too=True)
    image_shape, mask_shape = image.shape, masks.shape
    image = det.augment_image(image)
    if masks.shape[-1]:
        # 0/255 rather than 0/1, so an interpolating augmenter (Affine order=1) blends to a value that the
        # >= 128 test below splits at the true edge instead of dilating the mask.
        hooks = imgaug.HooksImages(activator=_mask_hook)
        masks = det.augment_image(masks.astype(np.uint8) * 255, hooks=hooks) >= 128
    if image.shape != image_shape or masks.shape != mask_shape:
        raise AugmentationError(f"augmentation changed the shape {image_shape} -> {image.shape} (masks "
                                f"{mask_shape} -> {masks.shape}): use size-keeping augmenters (e.g. "
                                "CropAndPad(keep_size=True), Affine), or resize in the config instead")
    return image, masks.astype(bool)


def _smear_augmentation(contrast, tint):
    """Flips, right-angle turns, stain strength (per channel if `tint`), optional contrast, mild blur (in order)."""
    import imgaug.augmenters as iaa

    steps = [
        iaa.Fliplr(0.5),
        iaa.Flipud(0.5),
        iaa.OneOf([iaa.Affine(rotate=0), iaa.Affine(rotate=90), iaa.Affine(rotate=180), iaa.Affine(rotate=270)]),
        iaa.Sometimes(0.5, iaa.Multiply((0.85, 1.15), per_channel=0.5 if tint else False)),
    ]
    if contrast:
        steps.append(iaa.Sometimes(0.3, iaa.LinearContrast((0.8, 1.2))))
    steps.append(iaa.Sometimes(0.2, iaa.GaussianBlur(sigma=(0.0, 1.0))))
    return iaa.Sequential(steps)


def lisc_augmentation():
    """Default augmentation for stained blood smears (Matterport's nucleus recipe, tuned for LISC).

    A smear has no up, down or handedness, so flips and right-angle turns are free data; stain
    strength and tint vary between slides (per-channel multiply, half the time); focus varies a little
    (mild blur). Right angles keep every pixel on a square (padded) image: an arbitrary angle would cut
    corners.
    """
    return _smear_augmentation(contrast=False, tint=True)


def bccd_augmentation():
    """For real smear photographs (BCCD-WBC's recipe): `lisc_augmentation` with contrast and without its tint.

    No hue shift: an Eosinophil differs from a Neutrophil mostly by the colour of its granules, so every
    channel is scaled by the same factor (brightness) and stretched by the same contrast. With LISC's
    per-channel tint a BCCD run typed fewer validation Eosinophils than without (a single run each way;
    measured: bench/RESULTS.md).
    """
    return _smear_augmentation(contrast=True, tint=False)


# Config.AUGMENTATION -> the augmentation `mrcnn-tf train` and the benchmarks apply ("none": no augmentation).
AUGMENTATIONS = {"lisc": lisc_augmentation, "bccd": bccd_augmentation, "none": lambda: None}


def augmentation_for(config):
    """The imgaug augmenter named by `config.AUGMENTATION` (None for "none")."""
    return AUGMENTATIONS[getattr(config, "AUGMENTATION", "lisc")]()
