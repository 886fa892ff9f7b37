"""Augmentation moves image and masks together (checked on images whose pixels encode the masks)."""
import imgaug.augmenters as iaa
import numpy as np
import pytest

from mrcnn_tf.data.augment import AugmentationError, augment_image_and_masks, lisc_augmentation


def encoded(rng, shape=(96, 128), count=6):
    """Random disc/box masks and an image whose channel c is 255 on the masks of instances c, c+3, ..."""
    h, w = shape
    masks = np.zeros((h, w, count), dtype=bool)
    yy, xx = np.mgrid[:h, :w]
    for i in range(count):
        cy, cx, r = rng.integers(10, h - 10), rng.integers(10, w - 10), rng.integers(5, 15)
        masks[:, :, i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r if i % 2 else \
            (abs(yy - cy) <= r) & (abs(xx - cx) <= r // 2)
    # Keep instances disjoint so the image can encode them: later ones win.
    for i in range(count - 1, -1, -1):
        masks[:, :, :i] &= ~masks[:, :, i:i + 1]
    image = np.zeros((h, w, 3), dtype=np.uint8)
    for i in range(count):
        image[masks[:, :, i], i % 3] = 255
    return image, masks


def decoded(image, threshold):
    """Per channel, the union of the masks it encodes."""
    return [image[:, :, c] >= threshold for c in range(3)]


def union_per_channel(masks):
    return [masks[:, :, c::3].any(axis=2) for c in range(3)]


@pytest.mark.parametrize("seed", range(6))
def test_nearest_neighbour_geometry_keeps_exact_alignment(seed):
    rng = np.random.default_rng(seed)
    image, masks = encoded(rng)
    aug = iaa.Sequential([
        iaa.Fliplr(0.5), iaa.Flipud(0.5),
        iaa.Affine(rotate=(-40, 40), translate_px=(-12, 12), scale=(0.8, 1.2), order=0),
        iaa.Multiply((0.6, 1.4)),  # colour: image only
    ])
    out_image, out_masks = augment_image_and_masks(aug, image, masks, rng)
    assert out_image.shape == image.shape and out_masks.shape == masks.shape and out_masks.dtype == bool
    for got, want in zip(decoded(out_image, 100), union_per_channel(out_masks)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(4))
def test_interpolating_geometry_stays_aligned(seed):
    rng = np.random.default_rng(10 + seed)
    image, masks = encoded(rng, shape=(128, 128))
    aug = iaa.Sequential([
        iaa.Affine(rotate=(-30, 30), shear=(-10, 10)),  # bilinear
        iaa.CropAndPad(px=(-10, 10), keep_size=True),  # resized back with cubic interpolation
        iaa.PiecewiseAffine(scale=(0.01, 0.02), nb_rows=3, nb_cols=3),
    ])
    out_image, out_masks = augment_image_and_masks(aug, image, masks, rng)
    for got, want in zip(decoded(out_image, 128), union_per_channel(out_masks)):
        union = (got | want).sum()
        assert union == 0 or (got & want).sum() / union > 0.9


@pytest.mark.parametrize("seed", range(4))
def test_lisc_augmentation_alignment_and_determinism(seed):
    rng = np.random.default_rng(seed)
    image, masks = encoded(rng, shape=(128, 128))
    aug = lisc_augmentation()
    out_image, out_masks = augment_image_and_masks(aug, image, masks, np.random.default_rng(seed))
    again = augment_image_and_masks(aug, image, masks, np.random.default_rng(seed))
    np.testing.assert_array_equal(out_image, again[0])
    np.testing.assert_array_equal(out_masks, again[1])
    # Right-angle turns and flips lose no instance pixels.
    assert sorted(out_masks.sum(axis=(0, 1))) == pytest.approx(sorted(masks.sum(axis=(0, 1))), rel=0.1)
    for got, want in zip(decoded(out_image, 60), union_per_channel(out_masks)):
        union = (got | want).sum()
        assert union == 0 or (got & want).sum() / union > 0.9


def test_different_draws_differ():
    image, masks = encoded(np.random.default_rng(0))
    aug = iaa.Affine(rotate=(-90, 90), order=0)
    results = {augment_image_and_masks(aug, image, masks, np.random.default_rng(s))[1].tobytes() for s in range(5)}
    assert len(results) > 1


def test_colour_and_blur_never_touch_masks():
    image, masks = encoded(np.random.default_rng(2))
    aug = iaa.Sequential([iaa.GaussianBlur(sigma=3.0), iaa.Multiply(0.5), iaa.AdditiveGaussianNoise(scale=20)])
    out_image, out_masks = augment_image_and_masks(aug, image, masks, np.random.default_rng(0))
    np.testing.assert_array_equal(out_masks, masks)
    assert not np.array_equal(out_image, image)


def test_no_instances_and_shape_changes():
    image, _ = encoded(np.random.default_rng(3))
    empty = np.zeros(image.shape[:2] + (0,), dtype=bool)
    out_image, out_masks = augment_image_and_masks(iaa.Fliplr(1.0), image, empty, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    assert out_masks.shape == empty.shape
    for aug in (iaa.Resize({"height": 50, "width": 50}), iaa.CropAndPad(px=5, keep_size=False)):
        with pytest.raises(AugmentationError, match="augmentation changed the shape"):
            augment_image_and_masks(aug, image, empty, np.random.default_rng(0))


def test_bccd_augmentation_keeps_the_hue_and_lisc_tints():
    """BCCD's recipe scales and stretches all channels alike: on a flat colour the channel differences keep
    their ratio (the Eosinophil cue); LISC's per-channel stain strength changes it in some draws."""
    from mrcnn_tf.data.augment import bccd_augmentation

    image = np.empty((32, 32, 3), np.uint8)
    image[:] = (190, 110, 150)  # (r - g) / (b - g) = 2
    masks = np.zeros((32, 32, 0), bool)

    def ratios(augmentation):
        out = []
        for seed in range(60):
            aug, _ = augment_image_and_masks(augmentation, image, masks, np.random.default_rng(seed))
            r, g, b = aug[16, 16].astype(float)
            out.append((r - g) / (b - g))
        return np.array(out)

    # uint8 rounding of a difference of about 40 moves the ratio by at most ~0.1.
    np.testing.assert_allclose(ratios(bccd_augmentation()), 2.0, atol=0.12)
    assert np.abs(ratios(lisc_augmentation()) - 2.0).max() > 0.3
