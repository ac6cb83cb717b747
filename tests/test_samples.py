from PIL import Image

from headstart.data import load_dataset
from headstart.data.samples import write_digits


def test_digits_sample_is_a_folder_of_class_folders(tmp_path):
    assert write_digits(tmp_path) == 1797
    dataset = load_dataset(tmp_path)
    assert dataset.classes == [str(d) for d in range(10)]
    assert len(dataset.samples) == 1797
    image = Image.open(dataset.samples[0].path)
    assert image.size == (64, 64)
    assert image.getextrema()[1] == 255  # white paper around dark ink
