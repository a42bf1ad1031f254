"""drcnet.data.image_io: any file to float RGB, errors that name the file."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from drcnet.data.image_io import (IMAGE_EXTENSIONS, ImageReadError, ImageWriteError, decode_image,
                                  list_images, read_image, side_by_side, write_image)
from drcnet.data.samples import SAMPLE_NAMES, load_sample


def _chelsea_crop() -> np.ndarray:
    return load_sample('chelsea')[40:104, 100:180]  # 64 x 80, not square: rotations show


def test_png_round_trip_is_exact_and_rgb(tmp_path):
    img = _chelsea_crop()
    path = write_image(tmp_path / 'sub' / 'dir' / 'cat.png', img)
    assert path.is_file()
    back = read_image(path)
    assert back.dtype == np.float32 and back.shape == img.shape
    np.testing.assert_array_equal(back, img)  # 8-bit source: rounding is exact
    # the file really is RGB on disk: OpenCV's BGR read reversed equals ours
    bgr = cv2.imread(str(path))
    np.testing.assert_array_equal(bgr[:, :, ::-1].astype(np.float32) / 255, back)


def test_16_bit_round_trip(tmp_path):
    ramp = np.linspace(0, 1, 64 * 80 * 3, dtype=np.float32).reshape(64, 80, 3)
    write_image(tmp_path / 'ramp.png', ramp, bits=16)
    raw = cv2.imread(str(tmp_path / 'ramp.png'), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    back = read_image(tmp_path / 'ramp.png')
    assert np.abs(back - ramp).max() <= 0.5 / 65535 + 1e-7
    assert np.abs(back - ramp).max() < 1 / 255 / 10  # far finer than 8 bits
    with pytest.raises(ImageWriteError, match='16-bit'):
        write_image(tmp_path / 'ramp.jpg', ramp, bits=16)


def test_grey_and_alpha_become_rgb(tmp_path):
    grey = (load_sample('astronaut')[:32, :48, 0] * 255).round().astype(np.uint8)
    cv2.imwrite(str(tmp_path / 'grey.png'), grey)
    out = read_image(tmp_path / 'grey.png')
    assert out.shape == (32, 48, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey / np.float32(255))
    rgba = np.dstack([(_chelsea_crop() * 255).round().astype(np.uint8), np.full((64, 80), 7, np.uint8)])
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'rgba.png')
    out = read_image(tmp_path / 'rgba.png')
    assert out.shape == (64, 80, 3)
    np.testing.assert_array_equal(out, rgba[:, :, :3] / np.float32(255))


def test_jpeg_exif_orientation_is_applied(tmp_path):
    img = (_chelsea_crop() * 255).round().astype(np.uint8)  # 64 x 80
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    pil.save(tmp_path / 'rotated.jpg', exif=exif.tobytes(), quality=98)
    pil.save(tmp_path / 'plain.jpg', quality=98)
    plain = read_image(tmp_path / 'plain.jpg')
    rotated = read_image(tmp_path / 'rotated.jpg')
    assert plain.shape == (64, 80, 3) and rotated.shape == (80, 64, 3)
    expected = np.rot90(plain, k=-1)  # clockwise
    assert np.abs(rotated - expected).mean() < 0.01
    assert np.abs(rotated - np.rot90(plain, k=1)).mean() > 0.05


@pytest.mark.parametrize('suffix', ['.png', '.jpg'])
def test_truncated_file_names_the_file(tmp_path, suffix):
    good = tmp_path / f'good{suffix}'
    write_image(good, load_sample('coffee')[:128, :128])
    data = good.read_bytes()
    bad = tmp_path / f'cut{suffix}'
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match='truncated') as info:
        read_image(bad)
    assert str(bad) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_garbage_empty_and_missing_files_name_the_file(tmp_path):
    garbage = tmp_path / 'notes.png'
    garbage.write_text('this is not an image')
    with pytest.raises(ImageReadError, match='notes.png'):
        read_image(garbage)
    empty = tmp_path / 'empty.jpg'
    empty.write_bytes(b'')
    with pytest.raises(ImageReadError, match='empty.jpg'):
        read_image(empty)
    with pytest.raises(ImageReadError, match='missing.png'):
        read_image(tmp_path / 'missing.png')
    with pytest.raises(ImageReadError, match='lmdb-key-7'):
        decode_image(b'\x00\x01', 'lmdb-key-7')


def test_decode_bytes_matches_file(tmp_path):
    path = write_image(tmp_path / 'a.png', load_sample('rocket')[:50, :70])
    np.testing.assert_array_equal(decode_image(path.read_bytes(), 'a'), read_image(path))


def test_write_error_names_the_path(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(ImageWriteError, match='file/inside.png'):
        write_image(blocker / 'inside.png', _chelsea_crop())
    with pytest.raises(ImageWriteError, match='.gif'):
        write_image(tmp_path / 'x.gif', _chelsea_crop())


def test_list_images_filters_sorts_and_recurses(tmp_path):
    img = load_sample('chelsea')[:8, :8]
    for name in ['b.PNG', 'a.jpg', 'c.TIFF', 'd.bmp']:
        write_image(tmp_path / name, img)
    (tmp_path / 'readme.txt').write_text('not an image')
    (tmp_path / '._a.jpg').write_bytes(b'resource fork')  # hidden: skipped
    write_image(tmp_path / 'nested' / 'e.jpeg', img)
    assert [p.name for p in list_images(tmp_path)] == ['a.jpg', 'b.PNG', 'c.TIFF', 'd.bmp']
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ['a.jpg', 'b.PNG', 'c.TIFF', 'd.bmp',
                                                                       'e.jpeg']
    assert set(IMAGE_EXTENSIONS) >= {'.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp'}
    with pytest.raises(FileNotFoundError, match='nowhere'):
        list_images(tmp_path / 'nowhere')


def test_every_sample_loads_as_float_rgb():
    for name in SAMPLE_NAMES:
        img = load_sample(name)
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3, name
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05, name
    left, right = load_sample('motorcycle_left'), load_sample('motorcycle_right')
    assert left.shape == right.shape == (500, 741, 3) and not np.array_equal(left, right)
    with pytest.raises(ValueError, match="did you mean 'chelsea'"):
        load_sample('chelsae')


def test_side_by_side_places_each_image_unchanged_between_white_gaps():
    a, b, c = (load_sample(n)[:40, :w] for n, w in (('astronaut', 30), ('chelsea', 50), ('coffee', 20)))
    out = side_by_side(a, b, c, gap=5)
    assert out.shape == (40, 30 + 5 + 50 + 5 + 20, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :30], a)
    np.testing.assert_array_equal(out[:, 35:85], b)
    np.testing.assert_array_equal(out[:, 90:], c)
    assert (out[:, 30:35] == 1).all() and (out[:, 85:90] == 1).all()
    u8 = [(img * 255).round().astype(np.uint8) for img in (a, b)]
    out = side_by_side(*u8)
    assert out.shape == (40, 30 + 8 + 50, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :30], u8[0])
    np.testing.assert_array_equal(out[:, 38:], u8[1])
    assert (out[:, 30:38] == 255).all()
    with pytest.raises(ValueError, match=r'one height.*\(40, 30, 3\).*\(39, 50, 3\)'):
        side_by_side(a, b[:39])


def test_stored_form_of_grey_16_bit_and_alpha_files_round_trips_exactly(tmp_path):
    from drcnet.data.image_io import read_stored_image
    crop = (_chelsea_crop() * 255).round().astype(np.uint8)
    alpha = np.arange(64 * 80, dtype=np.uint32).reshape(64, 80).astype(np.uint8)
    deep = (np.arange(64 * 80 * 3, dtype=np.uint32).reshape(64, 80, 3) * 13 % 65536).astype(np.uint16)
    files = {'rgba.png': Image.fromarray(np.dstack([crop, alpha]), 'RGBA'),
             'la.png': Image.fromarray(np.dstack([crop[:, :, 1], alpha]), 'LA'),
             'grey.png': Image.fromarray(crop[:, :, 0], 'L')}
    for name, img in files.items():
        img.save(tmp_path / name)
    cv2.imwrite(str(tmp_path / 'deep.png'), deep[:, :, ::-1])
    cv2.imwrite(str(tmp_path / 'deep.tif'), deep[:, :, 0])
    for name in ('rgba.png', 'la.png', 'grey.png', 'deep.png', 'deep.tif'):
        stored = read_stored_image(tmp_path / name)
        np.testing.assert_array_equal(stored.rgb, read_image(tmp_path / name))  # what the network sees
        write_image(tmp_path / 'back' / name, stored.like_stored(stored.rgb), bits=stored.bits)
        with Image.open(tmp_path / name) as a, Image.open(tmp_path / 'back' / name) as b:
            assert b.mode == a.mode, name
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a))  # nothing changed on the way
    stored = read_stored_image(tmp_path / 'la.png')
    assert stored.grey and stored.bits == 8 and np.array_equal(stored.alpha, alpha)
    assert read_stored_image(tmp_path / 'deep.tif').grey and read_stored_image(tmp_path / 'deep.png').bits == 16
    assert stored.like_stored(stored.rgb, bits=16)[:, :, 1].tolist() == (alpha.astype(np.uint16) * 257).tolist()


def test_alpha_follows_the_exif_rotation_of_its_colours(tmp_path):
    from drcnet.data.image_io import read_stored_image
    crop = (_chelsea_crop() * 255).round().astype(np.uint8)  # 64 x 80
    alpha = np.tile(np.arange(80, dtype=np.uint8) * 3, (64, 1))
    pil = Image.fromarray(np.dstack([crop, alpha]), 'RGBA')
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    pil.save(tmp_path / 'rotated.png', exif=exif.tobytes())
    stored = read_stored_image(tmp_path / 'rotated.png')
    assert stored.rgb.shape == (80, 64, 3)
    np.testing.assert_array_equal(stored.rgb, np.rot90(crop, k=-1) / np.float32(255))
    np.testing.assert_array_equal(stored.alpha, np.rot90(alpha, k=-1))
