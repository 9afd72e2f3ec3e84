"""The shipped job configs load, and the quickstart file is exactly the embedded default job."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gazerm.config import load_config
from gazerm.data.config import PrepareConfig
from gazerm.errors import ConfigError
from gazerm.train.config import TrainJobConfig
from gazerm.train.job import check_prompt_gaze
from gazerm.tune.reproduce import ReproduceConfig
from tests.helpers import prepare_readability

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def test_quickstart_file_is_the_embedded_default():
    assert load_config(TrainJobConfig, JOBS / "quickstart.yaml") == TrainJobConfig()


@pytest.mark.parametrize(
    ("name", "backbone", "predictor", "features_used", "max_length"),
    [
        ("helpsteer2_mistral7b_gazeconcat.yaml", "mistralai/Mistral-7B-v0.3", "fmv1", [0, 0, 0, 1, 0], 8000),
        ("oasst1_llama3_8b_ffd_trt.yaml", "meta-llama/Meta-Llama-3-8B", "fmv2", [0, 1, 0, 1, 0], 1350),
    ],
)
def test_paper_configs_are_the_reference_runs(name, backbone, predictor, features_used, max_length):
    """The reference README's two examples: QLoRA (NF4) LoRA r 8 / alpha 32 / dropout 0.1 on peft's
    default q/v targets, AdamW (0.9, 0.999) with weight decay 0.1, lr 5e-5 on a cosine to 0.7 after 1%
    warm-up, batch 8 on one GPU, 2 epochs, evaluation every 64 steps, the best-validation model tested."""
    config = load_config(TrainJobConfig, JOBS / name)
    model, optim, run = config.model, config.optim, config.run
    assert (model.backbone, config.data.prepare.gaze.predictor) == (backbone, predictor)
    assert (model.features_used, config.data.max_length) == (features_used, max_length)
    assert (model.gaze_layout, model.fusion, model.quantization) == ("reference", "concat", "nf4")
    assert model.lora.model_dump() == {
        "r": 8,
        "alpha": 32,
        "dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
    }
    assert (model.fp_dropout, model.fp_hidden, model.gradient_checkpointing) == ((0.1, 0.3), 128, True)
    assert (optim.lr, optim.betas, optim.weight_decay) == (5e-5, (0.9, 0.999), 0.1)
    assert (optim.scheduler, optim.warmup_ratio, optim.min_lr_ratio) == ("cosine", 0.01, 0.7)
    assert (run.num_workers * run.micro_batch_size * run.grad_accum, run.epochs, run.eval_every) == (8, 2, 64)
    assert (run.select, run.select_metric, run.use_gpu, run.zero_stage) == ("best", "val/accuracy", True, 2)
    # ... in the reference's mode, reading what the reference reads
    assert (model.fidelity, config.data.template, run.final_eval, run.select_ties) == (
        "reference",
        "reference_chat",
        False,
        "earlier",
    )


@pytest.mark.parametrize("name", ["paper_helpsteer2_reproduce.yaml", "paper_oasst1_reproduce.yaml"])
def test_paper_reproductions_load_and_share_prepared_data(name):
    config = load_config(ReproduceConfig, JOBS / name)
    runs = config.runs(config.base_job())
    assert len(runs) == len(config.rows) * 3 and {row.name for row in config.rows} >= {"baseline"}
    assert {run.job.model.fusion for run in runs} == {"none", "concat", "add"}
    modes = {(run.job.model.fidelity, run.job.data.template) for run in runs}
    assert modes == {("reference", "reference_chat")}
    assert len({run.job.data.prepare.output_dir for run in runs}) == 2  # one per gaze predictor
    assert config.published_source is None  # the paper's tables were not found: no number is shown


@pytest.mark.parametrize(
    ("name", "job", "format", "options", "length_filter"),
    [
        (
            "paper_helpsteer2_prepare.yaml",
            "helpsteer2_mistral7b_gazeconcat.yaml",
            "helpsteer2",
            {},
            (10000, "mistralai/Mistral-7B-v0.3"),
        ),
        # ChatML (the reference's template for Llama-3-8B) adds 61 characters to each prompt + response
        (
            "paper_oasst1_prepare.yaml",
            "oasst1_llama3_8b_ffd_trt.yaml",
            "oasst1",
            {"lang": "en"},
            (9878, None),
        ),
    ],
)
def test_paper_prepare_configs_are_the_reference_data_setup(name, job, format, options, length_filter):
    """The hub's train split paired as the reference pairs it, pairs over its 10,000-character limit left
    out, 15% of the rest (shuffle, seed 42) as validation, the hub's validation split pinned as test; the
    training job prepares the same."""
    config = load_config(PrepareConfig, JOBS / name)
    assert [(s.format, s.split, s.assign_to, s.options) for s in config.sources] == [
        (format, "train", None, {**options, "pairing": "reference"}),
        (format, "validation", "test", {**options, "pairing": "reference"}),
    ]
    assert (config.splits, config.seed) == ({"train": 0.85, "validation": 0.15}, 42)
    assert (config.split_method, config.pinned_overlap) == ("shuffle", "keep")
    assert (config.filter.max_pair_chars, config.filter.chat_template) == length_filter
    assert load_config(TrainJobConfig, JOBS / job).data.prepare == config


def test_the_oasst1_reproduction_trains_and_tests_on_the_reference_codes_labels():
    """The reference code chooses the worse-ranked reply; the paper's accuracies are on those labels."""
    config = load_config(ReproduceConfig, JOBS / "paper_oasst1_reproduce.yaml")
    job = load_config(TrainJobConfig, JOBS / "oasst1_llama3_8b_ffd_trt.yaml")
    for run in config.runs(config.base_job()):
        prepare = run.job.data.prepare
        assert [s.options["pairing"] for s in prepare.sources] == ["reference_inverted"] * 2
        assert prepare.output_dir != job.data.prepare.output_dir  # not the job's own (best-chosen) data


def test_overrides_and_errors_name_the_field():
    config = load_config(TrainJobConfig, {}, {"model.fusion": "add", "optim.lr": 5e-4, "run.zero_stage": 3})
    assert (config.model.fusion, config.optim.lr, config.run.zero_stage) == ("add", 5e-4, 3)
    with pytest.raises(ConfigError, match=r"run\.zero_stage"):
        load_config(TrainJobConfig, {}, {"run.zero_stage": 1})
    with pytest.raises(ConfigError, match=r"model\.features_used"):
        load_config(TrainJobConfig, {}, {"model.features_used": [1, 1]})
    with pytest.raises(ConfigError, match=r"exactly one of data\.dataset_dir"):
        load_config(TrainJobConfig, {}, {"data.prepare": None})  # neither shards nor a prepare section


def test_override_changes_one_field_of_a_default_section():
    config = load_config(TrainJobConfig, {}, {"data.prepare.gaze.backend": "local"})
    assert config.data.prepare.gaze.backend == "local"
    assert config.data.prepare == TrainJobConfig().data.prepare.model_copy(
        update={"gaze": TrainJobConfig().data.prepare.gaze.model_copy(update={"backend": "local"})}
    )


def test_init_from_is_refused_with_zero3_when_the_config_is_read():
    with pytest.raises(ConfigError, match=r"use run\.zero_stage=2"):
        load_config(TrainJobConfig, {}, {"model.init_from": "runs/general/model", "run.zero_stage": 3})


def test_the_smollm2_job_trains_the_packaged_backbone_with_its_chat_template():
    config = load_config(TrainJobConfig, JOBS / "smollm2_hh_rlhf.yaml")
    assert (config.model.backbone, config.data.template) == ("smollm2-135m-instruct", "chat")
    assert [s.format for s in config.data.prepare.sources] == ["hh_rlhf"] and not config.run.use_gpu


def test_prepared_shards_replace_the_default_prepare_section():
    """data.dataset_dir alone is enough (no `prepare: null`), from a file or an override; a prepare
    section the user wrote next to it is still a conflict."""
    from_dict = load_config(TrainJobConfig, {"data": {"dataset_dir": "runs/data/x"}})
    from_override = load_config(TrainJobConfig, {}, {"data.dataset_dir": "runs/data/x"})
    assert from_dict.data.prepare is None and from_override.data.prepare is None
    assert from_override.data.shards_dir == "runs/data/x"
    written = {"sources": [{"format": "generic", "path": "a.jsonl"}], "output_dir": "runs/data/a"}
    with pytest.raises(ConfigError, match=r"set exactly one of data\.dataset_dir"):
        load_config(TrainJobConfig, {"data": {"dataset_dir": "runs/data/x", "prepare": written}})


def test_packing_parses_and_is_refused_for_an_encoder_when_the_config_is_read():
    assert not TrainJobConfig().data.packing
    assert load_config(TrainJobConfig, {}, {"data.packing": True}).data.packing
    with pytest.raises(ConfigError, match=r"data\.packing .*tiny-bert is an encoder"):
        load_config(TrainJobConfig, {}, {"data.packing": True, "model.backbone": "tiny-bert"})
    for trait in ({"model.positions": "padded"}, {"model.pooling": "last_slot"}):
        with pytest.raises(ConfigError, match=r"data\.packing drops padding"):
            load_config(TrainJobConfig, {}, {"data.packing": True, **trait})
    reference = load_config(TrainJobConfig, {}, {"data.packing": True, "model.gaze_layout": "reference"})
    assert reference.model.gazes_prompt


def test_the_reference_layout_refuses_shards_prepared_before_prompt_gaze(tmp_path):
    manifest = prepare_readability(tmp_path, 40, seed=0, rows_per_shard=100, splits={"train": 1.0})
    root = str(tmp_path / "shards")
    reference = load_config(TrainJobConfig, {}, {"model.gaze_layout": "reference"})
    check_prompt_gaze(reference, root, manifest)  # prepared now: the prompt's gaze is there
    check_prompt_gaze(TrainJobConfig(), root, manifest)
    for path in manifest.shard_paths(root, "train"):  # as prepare wrote shards before it stored prompt gaze
        pq.write_table(pq.read_table(path).drop_columns(["prompt_gaze"]), path)
    check_prompt_gaze(TrainJobConfig(), root, manifest)  # the gazerm layout never reads it
    with pytest.raises(ConfigError, match="prepared before gazerm stored the prompt's gaze"):
        check_prompt_gaze(reference, root, manifest)


def test_the_gaze_predictor_gets_the_paths_it_needs_and_no_others():
    fmv2 = {"data.prepare.gaze.predictor": "fmv2", "data.prepare.gaze.path": "fmv2/model.pth"}
    config = load_config(TrainJobConfig, {}, fmv2 | {"data.prepare.gaze.base": "models/roberta-base"})
    assert config.data.prepare.gaze.predictor_kwargs() == {
        "predictor": "fmv2",
        "path": "fmv2/model.pth",
        "base": "models/roberta-base",
        "output_scale": None,
        "clip_negative": True,
    }
    with pytest.raises(ConfigError, match=r"gaze\.predictor=fmv2 needs gaze\.base"):
        load_config(TrainJobConfig, {}, fmv2)
    unused = r"gaze\.predictor=reading_model takes no gaze\.base or gaze\.output_scale"
    with pytest.raises(ConfigError, match=unused):
        load_config(
            TrainJobConfig, {}, {"data.prepare.gaze.base": "x", "data.prepare.gaze.output_scale": 100}
        )


def test_a_job_on_fmv1_gaze_uses_trt_alone():
    fmv1 = {
        "data.prepare.gaze.predictor": "fmv1",
        "data.prepare.gaze.path": "fmv1.pt",
        "data.prepare.gaze.base": "t5",
    }
    with pytest.raises(ConfigError, match=r"fmv1 gaze predictor leaves nFix, FFD, GPT, fixProp at 0: set "):
        load_config(TrainJobConfig, {}, fmv1)
    trt = load_config(TrainJobConfig, {}, fmv1 | {"model.features_used": [0, 0, 0, 1, 0]})
    assert trt.model.features_used == [0, 0, 0, 1, 0]
    assert load_config(TrainJobConfig, {}, fmv1 | {"model.fusion": "none"}).features_problem("fmv1") is None
    # Prepared shards: the job checks the predictor their manifest names when it starts.
    assert "fmv1" in TrainJobConfig().features_problem("fmv1")
