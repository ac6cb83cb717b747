import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import IMAGENET_ANT, IMAGENET_BEE, real_photos
from PIL import Image

from headstart.backbones import resolve_backbone
from headstart.backbones.network import PixelsToFeatures
from headstart.backbones.packaged import PACKAGED_WEIGHTS, PackagedWeights, load_packaged_module
from headstart.errors import HeadstartError

ANT, BEE = 310, 309  # ImageNet class indices


@pytest.fixture(scope="module")
def backbone():
    """At its pretrained size, where timm's transform and ImageNet classes are the reference."""
    return resolve_backbone("efficientnet_lite0", input_size=224)


def test_features_are_computed_at_the_test_resolution_by_default(backbone):
    default = resolve_backbone("efficientnet_lite0").preprocessing
    assert default.input_size == (288, 288)  # 224 x 1.29, to a multiple of 32
    assert (default.crop_pct, default.interpolation, default.mean, default.std) == (
        backbone.preprocessing.crop_pct,
        backbone.preprocessing.interpolation,
        backbone.preprocessing.mean,
        backbone.preprocessing.std,
    )


def test_packaged_weights_name_real_photos_correctly(backbone):
    network = PixelsToFeatures(backbone.build_module(with_classifier=True), backbone.preprocessing)
    photos = [
        IMAGENET_ANT,
        IMAGENET_BEE,
    ]
    pixels = np.stack([backbone.preprocessing.pixels(p.read_bytes()) for p in photos])
    with torch.no_grad():
        probabilities = network.eval()(torch.from_numpy(pixels)).softmax(1)
    assert probabilities.argmax(1).tolist() == [ANT, BEE]
    assert probabilities[0, ANT] > 0.5 and probabilities[1, BEE] > 0.5


def test_preprocessing_comes_from_timm_and_matches_its_transform(backbone):
    import timm
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config(
        pretrained_cfg=timm.get_pretrained_cfg("tf_efficientnet_lite0").to_dict()
    )
    assert backbone.preprocessing.input_size == tuple(config["input_size"][1:])
    assert backbone.preprocessing.crop_pct == config["crop_pct"]
    assert backbone.preprocessing.mean == tuple(config["mean"])
    image = Image.open(real_photos("daisy", 1)[0]).convert("RGB")
    reference = create_transform(**config)(image)  # normalised CHW float tensor
    ours = np.array(backbone.preprocessing.pixels_from_image(image))
    normalised = PixelsToFeatures(torch.nn.Identity(), backbone.preprocessing)[0]
    ours = normalised(torch.from_numpy(ours)[None])[0]
    assert torch.allclose(ours, reference, atol=2.5 / 127.5)


def test_packaged_weights_of_another_architecture_are_refused():
    lite0 = PACKAGED_WEIGHTS["efficientnet_lite0"]
    wrong = PackagedWeights("tf_efficientnet_lite1", lite0.module, lite0.distribution, None)
    with pytest.raises(HeadstartError, match="296 tensors, but tf_efficientnet_lite1 has 386"):
        load_packaged_module(wrong)


def test_every_tensor_shape_is_checked(monkeypatch):
    real_load = torch.load

    def load_with_one_wrong_shape(*args, **kwargs):
        state = real_load(*args, **kwargs)
        name = list(state)[5]
        state[name] = torch.zeros(state[name].numel() + 1)
        return state

    monkeypatch.setattr(torch, "load", load_with_one_wrong_shape)
    with pytest.raises(HeadstartError, match=r"has shape .* but .* needs"):
        load_packaged_module(PACKAGED_WEIGHTS["efficientnet_lite0"])


def test_fingerprint_changes_with_preprocessing(backbone):
    import dataclasses

    other = dataclasses.replace(
        backbone, preprocessing=dataclasses.replace(backbone.preprocessing, crop_pct=1.0)
    )
    assert other.fingerprint != backbone.fingerprint


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(
        HeadstartError, match=r"unknown backbone 'efficientnet_lite9'.*did you mean"
    ):
        resolve_backbone("efficientnet_lite9")


@pytest.mark.slow
def test_timm_download_offline_fails_with_a_clear_message(tmp_path):
    """The online path (timm/Hugging Face) without a network: one line, no traceback."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "t"),
    }
    code = (
        "from headstart.backbones import resolve_backbone\n"
        "resolve_backbone('resnet18').build_module()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert (
        result.returncode != 0
        and "could not download the pretrained weights of 'resnet18'" in result.stderr
    )
    photos = tmp_path / "photos"
    for label in ("daisy", "sunflower"):
        (photos / label).mkdir(parents=True)
        for photo in real_photos(label, 2):
            (photos / label / photo.name).write_bytes(photo.read_bytes())
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "headstart.cli",
            "train",
            str(photos),
            "-o",
            str(tmp_path / "m"),
            "--backbone",
            "resnet18",
            "--cache-dir",
            str(tmp_path / "cache"),
            "-q",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1
    assert "Traceback" not in cli.stderr
    assert "could not download the pretrained weights of 'resnet18'" in cli.stderr


@pytest.mark.parametrize("name", sorted(PACKAGED_WEIGHTS))
def test_shipped_preprocessing_configs_are_timms(name):
    """The packaged backbones carry timm's data config so a first run need not import timm;
    this fails the day timm resolves another one."""
    import timm
    from timm.data import resolve_data_config

    packaged = PACKAGED_WEIGHTS[name]
    model = timm.create_model(packaged.architecture, pretrained=False)
    resolved = resolve_data_config({}, model=model)
    assert {k: resolved[k] for k in packaged.timm_config} == packaged.timm_config


def test_features_pool_stages_3_to_6_beside_the_head(backbone):
    """The default features: the pooled head (1,280) then the pooled outputs of stages 3-6
    (80 + 112 + 192 + 320), from one forward pass; the head part is the plain backbone's."""
    head_only = backbone.head_only()
    assert backbone.pooled_stages == (3, 4, 5, 6) and head_only.pooled_stages == ()
    assert backbone.fingerprint != head_only.fingerprint
    assert "pooled_stages" not in head_only.describe()  # as models were written before
    photo = real_photos("sunflower", 1)[0]
    pixels = torch.from_numpy(np.array(backbone.preprocessing.pixels(photo.read_bytes())[None]))
    with torch.inference_mode():
        pooled = PixelsToFeatures(backbone.build_module(), backbone.preprocessing)(pixels)
        plain = PixelsToFeatures(head_only.build_module(), backbone.preprocessing)(pixels)
    assert pooled.shape == (1, 1984) and plain.shape == (1, 1280)
    assert torch.allclose(pooled[:, :1280], plain, atol=1e-5)
    assert pooled[:, 1280:].abs().sum() > 0


@pytest.mark.parametrize("unfreeze", ["1", "3", "5", "all"])
def test_a_split_backbone_makes_the_same_features(backbone, unfreeze):
    """Fine-tuning runs the frozen trunk, then the trained top: together they must give the
    whole backbone's features, pooled stages included, wherever the cut falls."""
    from headstart.backbones.network import PixelNormalize
    from headstart.backbones.stages import split_backbone

    photo = real_photos("sunflower", 1)[0]
    pixels = torch.from_numpy(np.array(backbone.preprocessing.pixels(photo.read_bytes())[None]))
    network = backbone.build_module().eval()
    split = split_backbone(network, unfreeze, backbone.preprocessing.input_size)
    with torch.inference_mode():
        images = PixelNormalize(backbone.preprocessing)(pixels)
        whole, parts = network(images), split.top(split.trunk(images))
    assert whole.shape == parts.shape == (1, 1984)
    assert torch.allclose(whole, parts, atol=1e-5)
    tuned = split.tuned_tensors()
    assert tuned and all(k.startswith(split.tuned_prefixes) for k in tuned)


def test_presets_choose_a_backbone_and_size_unless_one_is_given():
    from headstart.backbones.registry import preset_backbone
    from headstart.errors import SettingError

    assert preset_backbone(None, None, None) == ("efficientnet_lite0", None)
    assert preset_backbone("fast", None, None) == ("efficientnet_lite0", 224)
    assert preset_backbone("fast", None, 256) == ("efficientnet_lite0", 256)
    best = preset_backbone("best", None, None)[0]
    assert best == "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2"
    assert preset_backbone(None, "efficientnet_lite2", None) == ("efficientnet_lite2", None)
    with pytest.raises(SettingError, match="not both"):
        preset_backbone("best", "efficientnet_lite0", None)


def test_backbones_joined_by_plus_see_one_input_and_concatenate_their_features(tmp_path):
    joined = resolve_backbone("efficientnet_lite0+efficientnet_lite1", tmp_path)
    lite1 = resolve_backbone("efficientnet_lite1", tmp_path)
    assert joined.preprocessing == lite1.preprocessing  # the larger input: 320 px
    alone = resolve_backbone("efficientnet_lite0", tmp_path, input_size=320)
    assert joined.fingerprint not in (alone.fingerprint, lite1.fingerprint)
    photo = real_photos("daisy", 1)[0]
    pixels = torch.from_numpy(np.array(joined.preprocessing.pixels(photo.read_bytes())[None]))
    with torch.inference_mode():
        both = PixelsToFeatures(joined.build_module(), joined.preprocessing)(pixels)
        first = PixelsToFeatures(alone.build_module(), alone.preprocessing)(pixels)
        second = PixelsToFeatures(lite1.build_module(), lite1.preprocessing)(pixels)
    assert both.shape == (1, 1984 + 1984)
    assert torch.allclose(both, torch.cat([first, second], dim=1), atol=1e-5)
    assert joined.distance_features == 1280  # the unknown score compares Lite0's pooled head
    assert joined.width == 3968 and joined.leading_candidates == (1280, 1984)
    with pytest.raises(HeadstartError, match="name each backbone once"):
        resolve_backbone("efficientnet_lite0+efficientnet_lite0", tmp_path)
    with pytest.raises(HeadstartError, match="normalises its input differently"):
        resolve_backbone("efficientnet_lite0+resnet18", tmp_path)


@pytest.fixture(scope="module")
def own_weights(tmp_path_factory):
    """Lite0's packaged weights written as a user's checkpoint would be: .safetensors and a
    PyTorch state dict for timm's tf_efficientnet_lite0."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    module = load_packaged_module(PACKAGED_WEIGHTS["efficientnet_lite0"], with_classifier=True)
    state = {name: tensor.contiguous() for name, tensor in module.state_dict().items()}
    save_file(state, str(folder / "lite0.safetensors"))
    torch.save(state, folder / "lite0.pth")
    return folder


def test_own_weights_for_a_timm_architecture_load_offline(own_weights, tmp_path, monkeypatch):
    """No network (the Hugging Face hub is refused): the file's weights, the architecture's
    preprocessing, the same features as the package that wrote them: the stages that timm's
    architecture offers give the measured default (stages 3-6) by the general rule."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    packaged = resolve_backbone("efficientnet_lite0", tmp_path)
    pixels = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = packaged.build_module()(pixels)
    for file in ("lite0.safetensors", "lite0.pth"):
        own = resolve_backbone("tf_efficientnet_lite0", tmp_path, weights_file=own_weights / file)
        assert own.preprocessing == packaged.preprocessing
        assert own.pooled_stages == packaged.pooled_stages == (3, 4, 5, 6)
        assert own.width == packaged.width == 1984
        assert own.weights_id.startswith("sha256:") and own.weights_file == str(own_weights / file)
        with torch.no_grad():
            assert torch.equal(own.build_module()(pixels), expected)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    for bad, message in (
        (garbage, "not weights for tf_efficientnet_lite0"),
        (tmp_path / "missing.safetensors", "no such weights file"),
        (own_weights, "no such weights file"),  # a folder
        (tmp_path / "weights.pkl", "no such weights file"),
    ):
        with pytest.raises(HeadstartError, match=message):
            resolve_backbone("tf_efficientnet_lite0", tmp_path, weights_file=bad).build_module()
    pickled = tmp_path / "weights.pkl"
    pickled.write_bytes(b"\x80\x04N.")
    with pytest.raises(HeadstartError, match=r"\.safetensors, \.pth"):
        resolve_backbone("tf_efficientnet_lite0", tmp_path, weights_file=pickled)
    with pytest.raises(HeadstartError, match="one weights file is for one backbone"):
        resolve_backbone("efficientnet_lite0+efficientnet_lite1", weights_file=garbage)


@pytest.mark.slow
def test_a_model_trained_on_own_weights_predicts_and_names_a_missing_file(
    own_weights, presplit, cache_dir, tmp_path
):
    from conftest import headstart
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "mine.safetensors"
    weights.write_bytes((own_weights / "lite0.safetensors").read_bytes())
    model = tmp_path / "model"
    trained = headstart(
        "train", str(presplit), "-o", str(model), "--backbone", "tf_efficientnet_lite0",
        "--backbone-weights", str(weights), "--strategy", "linear", "-q", cache_dir=cache_dir,
        env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    photo = str(real_photos("sunflower", 1, skip=20)[0])
    predicted = headstart("predict", str(model), photo, "--json", cache_dir=tmp_path / "fresh")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)[0]["label"] in ("daisy", "sunflower")
    info = json.loads(headstart("info", str(model), "--json").stdout)
    assert info["backbone"]["weights_file"] == str(weights)
    weights.rename(tmp_path / "moved.safetensors")
    gone = headstart("predict", str(model), photo, cache_dir=tmp_path / "fresh2")
    assert gone.returncode == 1 and "Traceback" not in gone.stderr
    assert f"{weights}: no such weights file" in gone.stderr
    other = tmp_path / "other.safetensors"  # other weights at the recorded path
    state = load_file(str(own_weights / "lite0.safetensors"))
    state = {
        name: tensor * 1.01 if tensor.is_floating_point() else tensor
        for name, tensor in state.items()
    }
    save_file(state, str(other))
    weights.write_bytes(other.read_bytes())
    changed = headstart("predict", str(model), photo, cache_dir=tmp_path / "fresh3")
    assert changed.returncode == 1 and "Traceback" not in changed.stderr
    assert f"{weights}: not the weights this model was trained with" in changed.stderr


def test_lite0_stage_features_are_the_hand_written_ones_exactly(backbone):
    """timm's forward_intermediates gives Lite0's features bit for bit as the forward pass
    written out for EfficientNet did before: stem, blocks (stages 3-6 pooled), head."""
    network = backbone.build_module().eval()
    net = network.network
    images = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        x, pooled = net.bn1(net.conv_stem(images)), []
        for index, stage in enumerate(net.blocks):
            x = stage(x)
            if index in backbone.pooled_stages:
                pooled.append(x.mean((2, 3)))
        by_hand = torch.cat([net.global_pool(net.bn2(net.conv_head(x))), *pooled], dim=1)
        assert torch.equal(network(images), by_hand)


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    """A randomly initialised timm ResNet (resnet10t), saved as a user's checkpoint: a second
    family, made offline."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    network = timm.create_model("resnet10t", pretrained=False)
    file = tmp_path_factory.mktemp("resnet") / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(file))
    return file


def test_a_resnet_pools_its_stages_and_splits_into_its_groups(resnet_weights, tmp_path):
    """Stage features and fine-tuning units come from timm's own API: layer3 (stride 16) is
    pooled beside the head, layer4 is not (the head pools it alone), and the units are
    timm's groups: stem, layer1..layer4."""
    from headstart.backbones.network import PixelNormalize
    from headstart.backbones.stages import FrozenBelow, split_backbone, units_of

    resnet = resolve_backbone("resnet10t", tmp_path, weights_file=resnet_weights)
    assert resnet.pooled_stages == (3,) and resnet.width == 512 + 256
    assert resnet.leading_candidates == (512,) and resnet.distance_features == 512
    network = resnet.build_module().eval()
    units = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    assert units_of(network.network) == units
    photo = real_photos("sunflower", 1)[0]
    pixels = torch.from_numpy(np.array(resnet.preprocessing.pixels(photo.read_bytes())[None]))
    with torch.inference_mode():
        images = PixelNormalize(resnet.preprocessing)(pixels)
        features = network(images)
        inner = network.network
        stem = inner.maxpool(inner.act1(inner.bn1(inner.conv1(images))))
        layer3 = inner.layer3(inner.layer2(inner.layer1(stem)))
        head = inner.global_pool(inner.layer4(layer3))
    assert features.shape == (1, 768)
    assert torch.allclose(features, torch.cat([head, layer3.mean((2, 3))], 1), atol=1e-5)

    split = split_backbone(network, "2", resnet.preprocessing.input_size)
    assert isinstance(split.top, FrozenBelow) and split.units == 2
    assert split.tuned_prefixes == ("layer3", "layer4")
    with torch.inference_mode():
        assert torch.allclose(split.top(split.trunk(images)), features, atol=1e-5)
    split.top.train()
    assert inner.layer4.training and not inner.layer1.training and not inner.bn1.training
    top_two = [p for name, p in inner.named_parameters() if name.startswith(("layer3.", "layer4."))]
    assert {id(p) for p in split.tuned_parameters()} == {id(p) for p in top_two}
    with pytest.raises(HeadstartError, match="between 1 and 5"):
        split_backbone(network, "6")
