"""mrcnn_tf.ops.image: every resize mode's window/scale/padding/crop, molding and image meta."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_tf.config import Config
from mrcnn_tf.errors import ConfigError
from mrcnn_tf.ops.image import (compose_image_meta, mold_image, parse_image_meta, resize_image,
                                unmold_image)
from mrcnn_tf.ops.masks import resize_mask


def image_of(h, w, value=200, dtype=np.uint8):
    return np.full((h, w, 3), value, dtype=dtype)


def check_window(image, window, value):
    """Inside the window: the (constant) image; outside: zero padding."""
    y1, x1, y2, x2 = window
    inside = np.zeros(image.shape[:2], bool)
    inside[y1:y2, x1:x2] = True
    assert np.all(image[inside] != 0) and np.all(image[inside].astype(float) <= value)
    assert np.all(image[~inside] == 0)


def test_none_mode_is_identity():
    image = image_of(30, 40)
    out, window, scale, padding, crop = resize_image(image, min_dim=64, max_dim=128, mode="none")
    assert out is image or np.array_equal(out, image)
    assert window == (0, 0, 30, 40) and scale == 1 and padding == [(0, 0)] * 3 and crop is None


def test_square_shrinks_long_side_to_max_dim():
    out, window, scale, padding, crop = resize_image(image_of(100, 200), min_dim=64, max_dim=128, mode="square")
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert scale == pytest.approx(0.64)
    assert padding == [(32, 32), (0, 0), (0, 0)] and window == (32, 0, 96, 128) and crop is None
    check_window(out, window, 200)


def test_square_scales_short_side_up_to_min_dim():
    out, window, scale, padding, _ = resize_image(image_of(50, 40), min_dim=100, max_dim=256, mode="square")
    assert scale == pytest.approx(2.5)
    # 125 x 100 placed centred in 256 x 256: (256 - 125) // 2 = 65 on top, 66 below.
    assert padding == [(65, 66), (78, 78), (0, 0)] and window == (65, 78, 190, 178)
    assert out.shape == (256, 256, 3)
    check_window(out, window, 200)


def test_square_never_scales_down_for_min_dim_and_min_scale_is_capped_by_max_dim():
    _, window, scale, padding, _ = resize_image(image_of(100, 100), min_dim=64, max_dim=128, mode="square")
    assert scale == 1 and window == (14, 14, 114, 114) and padding == [(14, 14), (14, 14), (0, 0)]
    # min_scale 3 would make 150 x 120; the 128 cap wins: 128 / 50.
    _, window, scale, _, _ = resize_image(image_of(50, 40), max_dim=128, min_scale=3, mode="square")
    assert scale == pytest.approx(2.56) and window == (0, 13, 128, 115)


def test_pad64_pads_each_side_to_multiple_of_64():
    out, window, scale, padding, crop = resize_image(image_of(100, 130), min_dim=64, max_dim=999, mode="pad64")
    assert scale == 1 and crop is None
    assert padding == [(14, 14), (31, 31), (0, 0)] and window == (14, 31, 114, 161)
    assert out.shape == (128, 192, 3)
    check_window(out, window, 200)
    out, window, _, padding, _ = resize_image(image_of(128, 64), min_dim=64, mode="pad64")
    assert out.shape == (128, 64, 3) and padding == [(0, 0)] * 3 and window == (0, 0, 128, 64)


def test_pad64_scales_up_and_rejects_min_dim_not_multiple_of_64():
    out, window, scale, padding, _ = resize_image(image_of(32, 50), min_dim=64, mode="pad64")
    # x2 -> 64 x 100 -> width padded to 128 (14 left, 14 right).
    assert scale == 2 and out.shape == (64, 128, 3) and padding == [(0, 0), (14, 14), (0, 0)]
    assert window == (0, 14, 64, 114)
    with pytest.raises(ConfigError, match="IMAGE_MIN_DIM"):
        resize_image(image_of(32, 50), min_dim=100, mode="pad64")


def test_crop_is_seeded_and_in_bounds():
    image = np.random.default_rng(0).integers(0, 255, (100, 130, 3), dtype=np.uint8)
    seen = set()
    for seed in range(30):
        out, window, scale, padding, crop = resize_image(image, min_dim=64, max_dim=999, mode="crop",
                                                         rng=np.random.default_rng(seed))
        y, x, h, w = crop
        assert (h, w) == (64, 64) and 0 <= y <= 36 and 0 <= x <= 66
        assert window == (0, 0, 64, 64) and scale == 1 and padding == [(0, 0)] * 3
        np.testing.assert_array_equal(out, image[y:y + 64, x:x + 64])
        again = resize_image(image, min_dim=64, mode="crop", rng=np.random.default_rng(seed))
        assert again[4] == crop
        seen.add(crop)
    assert len(seen) > 1


def test_crop_after_upscaling():
    out, _, scale, _, crop = resize_image(image_of(40, 50), min_dim=64, mode="crop", rng=np.random.default_rng(1))
    assert scale == pytest.approx(1.6) and out.shape == (64, 64, 3)
    assert crop[0] == 0 and 0 <= crop[1] <= 16


def test_bad_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="IMAGE_RESIZE_MODE"):
        resize_image(image_of(10, 10), mode="fit")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_dtype_kept(dtype):
    out = resize_image(image_of(50, 40, 100, dtype), min_dim=100, max_dim=256, mode="square")[0]
    assert out.dtype == dtype


def test_uint8_resize_rounds_instead_of_truncating():
    image = np.zeros((2, 2, 1), np.uint8)
    image[:, 1] = 255
    out = resize_image(image, min_dim=4, max_dim=4, mode="square")[0]
    # skimage bilinear with constant (zero) edges: outer product of row and column weights.
    ref = np.outer([0.75, 1, 1, 0.75], [0, 0.25, 0.75, 0.75]) * 255  # 47.8, 63.75 ... (truncation: 47, 63)
    np.testing.assert_array_equal(out[:, :, 0], np.round(ref).astype(np.uint8))


@settings(max_examples=25, deadline=None)
@given(st.integers(8, 150), st.integers(8, 150), st.sampled_from(["square", "pad64", "crop"]),
       st.sampled_from([0, 1.5]))
def test_mask_follows_image_in_every_mode(h, w, mode, min_scale):
    image = image_of(h, w)
    mask = np.ones((h, w, 2), bool)
    out, window, scale, padding, crop = resize_image(image, min_dim=64, max_dim=128, min_scale=min_scale,
                                                     mode=mode, rng=np.random.default_rng(h * w))
    resized = resize_mask(mask, scale, padding, crop)
    assert resized.shape[:2] == out.shape[:2]
    y1, x1, y2, x2 = window
    assert 0 <= y1 < y2 <= out.shape[0] and 0 <= x1 < x2 <= out.shape[1]
    # The mask lies inside the window, exactly where the image has content.
    np.testing.assert_array_equal(resized[:, :, 0], out[:, :, 0] > 0)


# ---------------------------------------------------------------- mold / meta
def test_mold_unmold_round_trip():
    config = Config()
    images = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    molded = mold_image(images, config)
    assert molded.dtype == np.float32
    np.testing.assert_allclose(molded[0, 0, 0], images[0, 0, 0] - np.array([123.7, 116.8, 103.9]), rtol=1e-5)
    np.testing.assert_array_equal(unmold_image(molded, config), images)
    assert unmold_image(np.full((1, 1, 3), 500.0), config).tolist() == [[[255, 255, 255]]]


def test_image_meta_round_trip():
    config = Config()
    config.NUM_CLASSES = 6
    config.refresh()
    active = np.array([1, 1, 0, 1, 0, 1])
    meta = compose_image_meta(7, (576, 720, 3), (1024, 1024, 3), (112, 0, 912, 1024), 1.4222, active)
    assert meta.shape == (config.IMAGE_META_SIZE,)
    parsed = parse_image_meta(np.stack([meta, meta]))
    assert parsed["image_id"].tolist() == [7, 7] and parsed["image_id"].dtype == np.int32
    assert parsed["original_image_shape"].tolist() == [[576, 720, 3]] * 2
    assert parsed["image_shape"].tolist() == [[1024, 1024, 3]] * 2
    assert parsed["window"].tolist() == [[112, 0, 912, 1024]] * 2
    np.testing.assert_allclose(parsed["scale"], [1.4222] * 2, rtol=1e-6)
    assert parsed["active_class_ids"].tolist() == [active.tolist()] * 2
    assert parse_image_meta(meta)["window"].shape == (1, 4)
