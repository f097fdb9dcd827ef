"""Explicit placement: what each stage reserves comes from the config, a CPU config never
takes a GPU, and a job that cannot fit the cluster is refused at the start, naming why."""

from engine.config import RunConfig
from engine.placement import fit_problems, pack, replica_bundle, train_bundle


def config(**over) -> RunConfig:
    return RunConfig.model_validate({"tasks": [{"name": "arithmetic"}], **over})


LOCAL = [{"CPU": 8, "GPU": 0}]  # the default local instance on a small machine


def test_the_default_job_fits_a_local_instance():
    assert fit_problems(config(), LOCAL) == []


def test_a_cpu_config_never_reserves_a_gpu_even_on_a_gpu_cluster():
    cfg = config()
    assert "GPU" not in train_bundle(cfg)
    assert "GPU" not in replica_bundle(cfg.student) and "GPU" not in replica_bundle(cfg.teacher)
    assert fit_problems(cfg, [{"CPU": 32, "GPU": 8}]) == []


def test_replicas_follow_training_onto_gpus_unless_told_otherwise():
    cfg = config(train={"use_gpu": True}, teacher={"tensor_parallel_size": 2})
    assert train_bundle(cfg) == {"CPU": 1.0, "GPU": 1.0}
    assert replica_bundle(cfg.teacher) == {"CPU": 1.0, "GPU": 2.0}
    assert replica_bundle(cfg.student) == {"CPU": 1.0, "GPU": 1.0}
    cpu_teacher = config(train={"use_gpu": True}, teacher={"use_gpu": False})
    assert replica_bundle(cpu_teacher.teacher) == {"CPU": 1.0}


def test_tensor_parallel_replicas_must_fit_on_one_node():
    cfg = config(train={"use_gpu": True}, teacher={"tensor_parallel_size": 4, "keep_warm": False})
    two_nodes = [{"CPU": 16, "GPU": 2}, {"CPU": 16, "GPU": 2}]  # 4 GPUs, but 2 per node
    problems = fit_problems(cfg, two_nodes)
    assert len(problems) == 1
    assert "teacher needs 1 replica(s) of 1 CPU + 4 GPU each, every replica on one node" in \
        problems[0] and "the largest 16 CPU, 2 GPU" in problems[0]
    assert fit_problems(cfg, [{"CPU": 16, "GPU": 4}]) == []


def test_a_warm_teacher_that_leaves_no_gpu_for_training_is_refused_with_the_fix():
    cfg = config(train={"use_gpu": True, "num_workers": 1})
    problems = fit_problems(cfg, [{"CPU": 8, "GPU": 1}])
    assert problems and all("teacher.keep_warm: false" in p for p in problems)
    assert fit_problems(config(train={"use_gpu": True, "num_workers": 1},
                               teacher={"keep_warm": False}), [{"CPU": 8, "GPU": 1}]) == []


def test_too_many_train_workers_are_named():
    problems = fit_problems(config(train={"num_workers": 12}), LOCAL)
    assert problems[0].startswith("training needs 12 worker(s) of 1 CPU each")
    assert "lower train.num_workers" in problems[0]


def test_pack_places_bundles_on_nodes_without_splitting_one():
    assert pack([{"CPU": 4}, {"CPU": 4}], [{"CPU": 3}, {"CPU": 3}])
    assert not pack([{"CPU": 4}, {"CPU": 4}], [{"CPU": 3}, {"CPU": 3}, {"CPU": 3}])
    assert not pack([{"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1}], [{"CPU": 1, "GPU": 2}])
    assert pack([{"CPU": 2, "GPU": 2}], [{"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}])
