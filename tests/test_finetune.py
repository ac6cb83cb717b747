"""Fine-tuning on a small set of real photos: what changes, resume, checkpoints, bad files."""

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import FINETUNE_SETTINGS_OPTIONS, finetune_run, headstart, real_photos, usage_check
from safetensors.torch import load_file

from headstart import Classifier, FitSettings, HeadstartError, train
from headstart.backbones import resolve_backbone
from headstart.context import RunContext
from headstart.data.samples import write_digits
from headstart.evaluation.score import evaluate
from headstart.features.views import TTA_VIEWS
from headstart.model.folder import METADATA_FILE, read_metadata, weights_path
from headstart.storage import CHECKPOINT_FILE
from headstart.training.checkpoint import Checkpoint

SETTINGS = FitSettings(**FINETUNE_SETTINGS_OPTIONS)


@pytest.mark.slow  # a fine-tuning run (the module's fixture)
def test_only_the_unfrozen_units_change(finetuned, cache_dir):
    classifier, _ = finetuned
    pretrained = resolve_backbone("efficientnet_lite0", cache_dir).head_only().build_module()
    pretrained = pretrained.state_dict()
    tuned_backbone = classifier.extractor().backbone
    # The features it was fine-tuned for, the default's: the pooled head and stages 3-6.
    assert tuned_backbone.pooled_stages == (3, 4, 5, 6)
    tuned = tuned_backbone.build_module().network.state_dict()
    unfrozen = ("blocks.6.", "conv_head.", "bn2.")
    assert set(classifier.backbone_tensors) == {k for k in pretrained if k.startswith(unfrozen)}
    changed = {k for k in pretrained if not torch.equal(pretrained[k], tuned[k])}
    assert changed, "fine-tuning changed no weight"
    assert all(k.startswith(unfrozen) for k in changed), sorted(changed)[:5]
    # Trainable weights moved; BatchNorm statistics stayed frozen (a small dataset).
    assert "conv_head.weight" in changed and "blocks.6.0.conv_pw.weight" in changed
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)


@pytest.mark.slow  # a fine-tuning run (the module's fixture)
def test_a_fine_tuned_model_scores_unknown_images_on_its_own_features(finetuned, train_only):
    """The unknown-image score keeps the tuned backbone's features of the training photos: each
    training photo, seen through the saved model, is its own nearest neighbour."""
    classifier, folder = finetuned
    assert classifier.unknown is not None
    photos = sorted(train_only.rglob("*.jpg"))
    features = classifier.extractor().extract_files(photos).features
    assert classifier.unknown.distances(features).max() < 1e-3
    reloaded = Classifier.load(folder)
    assert reloaded.unknown is not None
    scores = reloaded.unknown_scores(features)
    np.testing.assert_allclose(scores, classifier.unknown_scores(features), atol=1e-5)


@pytest.mark.slow
def test_pytorch_trunk_matches_onnx_and_fine_tunes(presplit, train_only, cache_dir, tmp_path):
    """The trunk a GPU runs in PyTorch: same activations as the ONNX one, and trainable on top."""
    from headstart.backbones.stages import split_backbone
    from headstart.features.views import pixels_or_reason
    from headstart.training.finetune import Trunk

    backbone = resolve_backbone("efficientnet_lite0", cache_dir).head_only()
    split = split_backbone(backbone.build_module(), "2")
    photos = sorted((presplit / "val" / "daisy").glob("*.jpg"))[:2]
    pixels = torch.from_numpy(
        np.stack([pixels_or_reason(backbone.preprocessing, p)[0] for p in photos])
    )
    cpu, onnx_dir = torch.device("cpu"), cache_dir / "onnx"
    ours = Trunk(backbone, split, cpu, onnx_dir, "torch")(pixels)
    reference = Trunk(backbone, split, cpu, onnx_dir, "onnx")(pixels)
    assert not ours.requires_grad and ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-3)

    settings = FitSettings(strategy="finetune", finetune_epochs=1, unfreeze="2", augment="light")
    classifier = train(
        train_only,
        settings=settings,
        val_percent=0,
        test_percent=0,
        context=RunContext(cache_dir=cache_dir, engine="torch"),
    )
    assert classifier.fine_tuned and classifier.summary.epochs_run == 1


@pytest.mark.slow  # a fine-tuning run (the module's fixture)
def test_history_checkpoint_and_summary(finetuned):
    classifier, folder = finetuned
    history = classifier.history
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all({"train_loss", "train_accuracy", "lr", "seconds"} <= set(h) for h in history)
    # The head's learning rate after each epoch follows the warm-up and cosine schedule,
    # stepped once a batch (24 photos: one batch an epoch).
    from headstart.training.finetune import warmup_cosine

    per_epoch = math.ceil(24 / SETTINGS.finetune_batch_size)
    factor = warmup_cosine(round(SETTINGS.warmup_epochs * per_epoch), 3 * per_epoch)
    expected = [SETTINGS.finetune_learning_rate * factor(e * per_epoch) for e in (1, 2, 3)]
    assert [h["lr"] for h in history] == pytest.approx(expected)
    assert classifier.record.head_history, "fine-tuning starts from a trained linear head"
    summary = classifier.summary
    assert summary.strategy == "finetune" and summary.epochs_run == 3
    assert not (folder / CHECKPOINT_FILE).exists(), "a finished run leaves no checkpoint"
    assert classifier.finetune.improved and classifier.fine_tuned


@pytest.mark.slow
def test_finetuned_model_reloads_predicts_and_exports_identically(
    finetuned, presplit, cache_dir, tmp_path
):
    from headstart.export.onnx import export_classifier
    from headstart.export.runtime import OnnxClassifier

    classifier, folder = finetuned
    photos = sorted((presplit / "val" / "sunflower").glob("*.jpg"))[:4]
    before = classifier.predict(photos)
    loaded = Classifier.load(folder, RunContext(cache_dir=cache_dir))
    assert loaded.fine_tuned and loaded.record.versions  # the libraries that wrote it
    assert replace(loaded.record, versions={}) == classifier.record  # every typed part
    assert loaded.record.finetune.improved and loaded.backbone.tuned_weights
    after = loaded.predict(photos)
    assert [p.probabilities for p in before] == [p.probabilities for p in after]
    onnx = OnnxClassifier(export_classifier(loaded, tmp_path / "tuned.onnx"))
    exported = onnx.predict(photos, top_k=2)
    for ours, theirs in zip(after, exported, strict=True):
        assert ours.labels[0] == theirs.labels[0]
        assert ours.probabilities[0] == pytest.approx(theirs.probabilities[0], abs=1e-3)
        # The unknown-image score travels too, computed in the graph from the tuned features.
        assert ours.unknown_score == pytest.approx(theirs.unknown_score, abs=1e-2)


@pytest.mark.slow  # a fine-tuning run (the module's fixture)
def test_tampered_tuned_weights_are_refused(finetuned, cache_dir, tmp_path):
    from safetensors.torch import save_file

    _, folder = finetuned
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    weights = weights_file(copy)
    tensors = load_file(str(weights))
    tensors["backbone.conv_head.weight"] += 0.01
    save_file(tensors, str(weights))
    with pytest.raises(HeadstartError, match="checksum"):
        Classifier.load(copy, RunContext(cache_dir=cache_dir)).extractor().backbone  # noqa: B018


def weights_file(folder):
    return weights_path(folder, read_metadata(folder))


def interrupt_after_one_epoch(monkeypatch, run) -> None:
    """Call `run` and stop it with Ctrl-C once the first epoch's checkpoint is written."""
    real_save = Checkpoint.save

    def save_then_stop(self, module, optimizer, scheduler, state):
        real_save(self, module, optimizer, scheduler, state)
        if state.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(Checkpoint, "save", real_save)


@pytest.mark.slow
def test_resume_after_an_interruption_gives_the_same_weights(
    finetuned, train_only, cache_dir, tmp_path, monkeypatch
):
    _, uninterrupted = finetuned
    folder = tmp_path / "interrupted"
    interrupt_after_one_epoch(monkeypatch, lambda: finetune_run(train_only, folder, cache_dir))
    assert (folder / CHECKPOINT_FILE).exists()
    assert not (folder / METADATA_FILE).exists()

    resumed = finetune_run(train_only, folder, cache_dir, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    ours = load_file(str(weights_file(folder)))
    theirs = load_file(str(weights_file(uninterrupted)))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


@pytest.mark.slow
def test_checkpoint_has_no_pickle_and_refuses_other_settings(
    presplit, cache_dir, tmp_path, monkeypatch
):
    folder = tmp_path / "model"
    settings = FitSettings(strategy="finetune", finetune_epochs=2, unfreeze="2", augment="none")
    interrupt_after_one_epoch(
        monkeypatch,
        lambda: train(presplit, folder, settings=settings, context=RunContext(cache_dir=cache_dir)),
    )
    data = (folder / CHECKPOINT_FILE).read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])  # safetensors layout
    state = json.loads(header["__metadata__"]["state"])
    assert state["loop"]["epoch"] == 1 and len(state["loop"]["history"]) == 1
    assert any(k.startswith("optimizer.") for k in header)

    other = FitSettings(strategy="finetune", finetune_epochs=2, unfreeze="2", augment="light")
    with pytest.raises(HeadstartError, match="augment: 'none' then, 'light' now"):
        train(
            presplit, folder, settings=other, context=RunContext(cache_dir=cache_dir), resume=True
        )


@pytest.mark.slow
def test_corrupt_training_image_is_skipped_when_fine_tuning(presplit, cache_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(presplit, data)
    (data / "train" / "daisy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 200)
    settings = FitSettings(strategy="finetune", finetune_epochs=1, unfreeze="2", augment="none")
    classifier = train(data, settings=settings, context=RunContext(cache_dir=cache_dir))
    summary = classifier.summary
    assert [path.rsplit("/", 1)[1] for path, _ in summary.skipped] == ["broken.jpg"]
    assert summary.used["train"] == 24 and summary.epochs_run == 1


@pytest.mark.slow
def test_augmented_cache_stores_k_views_and_reuses_them(presplit, cache_dir, tmp_path):
    from headstart.features import FeatureCache
    from headstart.features.views import augmented_views

    cache = tmp_path / "cache"
    shutil.copytree(cache_dir / "onnx", cache / "onnx")  # skip the one-time backbone export
    settings = FitSettings(aug_views=2)
    first = train(presplit, settings=settings, context=RunContext(cache_dir=cache))
    assert first.summary.computed == 16 + 24 * 3  # val, then train plain + 2 views
    assert "--aug-views 2 trains the head" in first.summary.reason  # auto: linear
    second = train(presplit, settings=settings, context=RunContext(cache_dir=cache))
    assert second.summary.computed == 0
    assert second.summary.augmented_views == 2

    backbone = resolve_backbone("efficientnet_lite0", cache, first.preprocessing.input_size[0])
    store = FeatureCache(cache)
    fingerprints = [v.fingerprint(backbone.fingerprint) for v in augmented_views("light", 2)]
    assert [store.count(f) for f in fingerprints] == [24, 24]
    assert len({backbone.fingerprint, *fingerprints}) == 3


def test_augmented_views_are_reproducible_and_differ(presplit):
    from headstart.features.views import PLAIN, augmented_views

    preprocessing = resolve_backbone("efficientnet_lite0").preprocessing
    data = next((presplit / "train" / "sunflower").glob("*.jpg")).read_bytes()
    one, two = augmented_views("strong", 2)
    assert np.array_equal(one.pixels(preprocessing, data), one.pixels(preprocessing, data))
    assert not np.array_equal(one.pixels(preprocessing, data), two.pixels(preprocessing, data))
    assert not np.array_equal(one.pixels(preprocessing, data), PLAIN.pixels(preprocessing, data))
    assert one.pixels(preprocessing, data).shape == (288, 288, 3)


def test_test_time_augmentation_averages_four_views(trained, presplit, cache_dir):
    classifier, _ = trained
    photos = sorted((presplit / "val" / "daisy").glob("*.jpg"))[:3]
    plain = classifier.predict(photos, top_k=2)
    averaged = classifier.predict(photos, top_k=2, tta=True)
    assert [p.probabilities for p in plain] != [p.probabilities for p in averaged]
    extractor = classifier.extractor()
    views = [
        classifier.probabilities(extractor.with_view(v).extract_files(photos).features)
        for v in TTA_VIEWS
    ]
    assert len(views) == 4
    expected = np.mean(views, axis=0)
    for prediction, row in zip(averaged, expected, strict=True):
        daisy = classifier.labels.index("daisy")
        got = dict(zip(prediction.labels, prediction.probabilities, strict=True))["daisy"]
        assert got == pytest.approx(float(row[daisy]), abs=1e-6)
    evaluation = evaluate(classifier, presplit, tta=True)
    assert evaluation.accuracy >= 0.8


def test_auto_strategy_follows_the_time_budget(monkeypatch):
    from headstart.training.strategy import choose_strategy

    monkeypatch.setattr("headstart.training.strategy.cpu_threads", lambda: 2)

    roomy = choose_strategy(245, 153, FitSettings(strategy="auto", time_budget="30m"), False)
    tight = choose_strategy(245, 153, FitSettings(strategy="auto", time_budget="20s"), False)
    assert roomy[0] == "finetune" and "within the 30m budget" in roomy[1]
    assert tight[0] == "linear" and "over the 20s budget" in tight[1]
    assert choose_strategy(50_000, 5_000, FitSettings(time_budget="5m"), False)[0] == "linear"
    # Fewer pixels, less time: 224 px costs (224/288)^2 of 288 px a training image.
    settings = FitSettings(strategy="auto", time_budget="5m")
    assert choose_strategy(3000, 300, settings, False, 288)[0] == "linear"
    assert choose_strategy(3000, 300, settings, False, 224)[0] == "finetune"


def test_auto_needs_enough_validation_and_photos_unlike_imagenet(monkeypatch):
    from headstart.training.strategy import MIN_VAL_IMAGES, auto_strategy

    monkeypatch.setattr("headstart.training.strategy.cpu_threads", lambda: 2)
    settings = FitSettings(time_budget="5m")

    def no_gpu_question() -> bool:
        raise AssertionError("asked whether there is a GPU (which imports torch) for nothing")

    def auto(val_images, last_layer_suffices, cuda=no_gpu_question, train_images=1000):
        return auto_strategy(train_images, val_images, settings, cuda, 224, last_layer_suffices)

    few = auto(MIN_VAL_IMAGES - 1, last_layer_suffices=False)
    assert few[0] == "linear" and "too few to tell" in few[1]
    near = auto(MIN_VAL_IMAGES, last_layer_suffices=True)
    assert near[0] == "linear" and "last layer alone" in near[1]
    far = auto(MIN_VAL_IMAGES, last_layer_suffices=False, cuda=lambda: False)
    assert far[0] == "finetune" and "earlier stages helped" in far[1] and "5m budget" in far[1]
    unmeasured = auto(MIN_VAL_IMAGES, last_layer_suffices=None, cuda=lambda: False)
    assert unmeasured[0] == "finetune" and "earlier stages" not in unmeasured[1]
    too_many = auto(MIN_VAL_IMAGES, False, cuda=lambda: False, train_images=50_000)
    assert too_many[0] == "linear" and "over the 5m budget" in too_many[1]


def test_preset_fast_never_fine_tunes(presplit, cache_dir, monkeypatch):
    monkeypatch.setattr("headstart.training.strategy.MIN_VAL_IMAGES", 1)
    settings = FitSettings(time_budget="1h")  # auto, the default
    context = RunContext(cache_dir=cache_dir, progress=False)
    summary = train(presplit, preset="fast", settings=settings, context=context).summary
    assert summary.strategy == "linear" and "--preset fast uses" in summary.reason


@pytest.mark.slow
def test_auto_fine_tunes_digits(cache_dir, tmp_path):
    """ "Far from ImageNet" is what the linear head just measured on validation: the backbone's
    earlier stages help it on handwritten digits. (That they do not on ants and bees, ImageNet's
    own kind, needs the whole dataset: bench/accuracy.py prints auto's choice and reason.)"""
    write_digits(tmp_path / "digits")
    settings = FitSettings(finetune_epochs=1, time_budget="1h")  # auto, the default
    context = RunContext(cache_dir=cache_dir, progress=False)
    digits = train(tmp_path / "digits", settings=settings, context=context)
    assert digits.summary.strategy == "finetune"
    assert "earlier stages helped" in digits.summary.reason
    assert "finetune" in digits.info


def test_epochs_are_chosen_by_the_loss_at_the_best_temperature():
    """Growing the logits of a good ranking raises the plain loss, not the calibrated one; an
    epoch that ranks better but is overconfident must still win over the start."""
    from headstart.training.loop import run_epochs
    from headstart.training.temperature import calibrated_nll

    truth = np.array([0, 1, 0, 1, 0, 1])
    start = np.array([[1.0, 0.0], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.4, 0.6], [0.9, 0.1]])
    better = np.array([[1.0, 0.0], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.7, 0.3], [0.9, 0.1]])
    assert calibrated_nll(start * 4, truth) == pytest.approx(calibrated_nll(start, truth))

    def scores(logits: np.ndarray) -> dict[str, float]:
        plain = float(torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(truth)))
        return {"val_loss": plain, "val_loss_calibrated": calibrated_nll(logits, truth)}

    validations = iter([scores(start), scores(better * 12)])
    assert scores(better * 12)["val_loss"] > scores(start)["val_loss"]
    module = torch.nn.Linear(1, 1)
    state = run_epochs(
        module,
        torch.optim.SGD(module.parameters(), lr=0.1),
        lambda epoch: (0.0, 1.0),
        lambda: next(validations),
        epochs=1,
        patience=1,
        seed=0,
        keep_start=True,
        select="val_loss_calibrated",
    )
    assert state.best_epoch == 1


def test_warmup_then_cosine():
    from headstart.training.finetune import warmup_cosine

    factor = warmup_cosine(4, 20)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(12) == pytest.approx(0.5)
    assert factor(20) == pytest.approx(0.0)


@pytest.mark.slow
def test_killed_command_resumes_to_the_same_weights(finetuned, train_only, cache_dir, tmp_path):
    _, uninterrupted = finetuned
    folder = tmp_path / "killed"
    command = [
        *[sys.executable, "-m", "headstart.cli", "train", str(train_only), "-o", str(folder)],
        *["--strategy", "finetune", "--finetune-epochs", "3", "--unfreeze", "2"],
        *["--val-percent", "0", "--test-percent", "0", "--cache-dir", str(cache_dir), "-q"],
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (folder / CHECKPOINT_FILE).exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (folder / METADATA_FILE).exists()

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    ours = load_file(str(weights_file(folder)))
    theirs = load_file(str(weights_file(uninterrupted)))
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


@pytest.mark.slow
def test_auto_strategy_says_what_it_chose_and_why(presplit, cache_dir, tmp_path):
    model = tmp_path / "model"
    result = headstart(
        *["train", str(presplit), "-o", str(model), "--strategy", "auto", "--json"],
        cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["strategy"] == "linear"
    assert "only 16 validation images, fewer than 100" in summary["reason"]
    info = json.loads(headstart("info", str(model), "--json").stdout)
    assert info["training"]["strategy"] == "linear" and info["head"]["kind"] == "linear"


def test_tta_from_the_command_line(trained, exported, cache_dir):
    _, onnx_file = exported
    classifier, folder = trained
    photos = [str(p) for p in real_photos("sunflower", 2, skip=20)]  # held out: less sure
    result = headstart("predict", str(folder), *photos, "--tta", "--json", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert [p["path"] for p in printed] == photos
    averaged = [p.probabilities for p in classifier.predict(photos, tta=True)]
    plain = [p.probabilities for p in classifier.predict(photos)]
    for row, tta, once in zip(printed, averaged, plain, strict=True):
        top = [entry["probability"] for entry in row["top"]]
        assert top == pytest.approx(tta, abs=1e-6) and top != pytest.approx(once, abs=1e-4)
    refused = headstart("predict", str(onnx_file), *photos, "--tta")
    assert refused.returncode == 1 and "--tta needs a model folder" in refused.stderr


def test_bad_strategy_settings_are_usage_errors(presplit, cache_dir, tmp_path, capsys):
    for option, value, message in [
        ("--strategy", "deep", "'deep' is not one of 'linear', 'mlp', 'finetune', 'auto'"),
        ("--augment", "wild", "'wild' is not one of 'none', 'light', 'strong'"),
        ("--unfreeze", "0", "--unfreeze must be a positive number or all"),
        ("--time-budget", "soon", "--time-budget must be a duration such as 90s, 5m or 1h"),
    ]:
        command = ["train", str(presplit), "-o", str(tmp_path / "m"), option, value]
        result = usage_check(*command, "--cache-dir", str(cache_dir), capsys=capsys)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_joined_backbones_cannot_fine_tune_and_fail_before_any_work(presplit, tmp_path):
    """Before: `--strategy auto` with a backbone that could not fine-tune chose fine-tuning
    and failed only after every feature was computed. Any one timm network fine-tunes now."""
    from headstart.backbones.registry import can_finetune
    from headstart.errors import SettingError

    assert can_finetune(resolve_backbone("efficientnet_lite0", tmp_path))
    assert can_finetune(resolve_backbone("resnet18", tmp_path))
    joined = "efficientnet_lite0+efficientnet_lite1"
    assert not can_finetune(resolve_backbone(joined, tmp_path))
    context = RunContext(cache_dir=tmp_path / "cache")
    with pytest.raises(SettingError, match="joined backbones"):
        train(presplit, backbone=joined, settings=SETTINGS, context=context)
    assert not list((tmp_path / "cache").glob("onnx/*"))  # no backbone was even exported


@pytest.mark.slow  # a fine-tuning run of a ResNet
def test_a_resnet_trains_with_stage_features_and_fine_tunes(train_only, tmp_path):
    """A second family, weights made offline: stage features, then its top two groups
    fine-tuned in place; the saved folder predicts what the trained classifier did."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = tmp_path / "resnet10t.safetensors"
    state = timm.create_model("resnet10t", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    folder, cache = tmp_path / "model", tmp_path / "cache"
    classifier = finetune_run(
        train_only, folder, cache, backbone="resnet10t", backbone_weights=weights
    )
    assert classifier.fine_tuned and classifier.finetune.tuned == ("layer3", "layer4")
    assert classifier.extractor().backbone.pooled_stages == (3,)
    assert set(classifier.backbone_tensors) == {
        k for k in state if k.startswith(("layer3.", "layer4."))
    }
    tuned = classifier.backbone_tensors.items()
    changed = {k for k, v in tuned if not np.array_equal(v, state[k].numpy())}
    assert any(k.endswith(".weight") for k in changed), "fine-tuning changed no weight"
    photos = real_photos("daisy", 2, skip=20) + real_photos("sunflower", 2, skip=20)
    reloaded = Classifier.load(folder, context=RunContext(cache_dir=tmp_path / "fresh"))
    for ours, theirs in zip(reloaded.predict(photos), classifier.predict(photos), strict=True):
        np.testing.assert_allclose(ours.probabilities, theirs.probabilities, atol=1e-4)
