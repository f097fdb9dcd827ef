"""Explicit placement: what each stage reserves comes from the config, a CPU config never
takes a GPU, and a job that cannot fit the cluster is refused at the start, naming why."""

from engine.config import RunConfig
from engine.placement import fit_problems, pack, replica_bundle, train_bundle


def config(**over) -> RunConfig:
    return RunConfig.model_validate({"tasks": [{"name": "arithmetic"}], **over})


GiB = 2 ** 30
HOST = 24 * GiB  # this machine's memory; Ray offers about 16 GiB of it to tasks
LOCAL = [{"CPU": 8, "GPU": 0, "memory": 16 * GiB}]  # the default local instance here


def test_the_default_job_fits_a_local_instance():
    assert fit_problems(config(), LOCAL, host_memory=HOST) == []


def test_a_cpu_config_never_reserves_a_gpu_even_on_a_gpu_cluster():
    cfg = config()
    assert "GPU" not in train_bundle(cfg.train)
    assert "GPU" not in replica_bundle(cfg.student, HOST)
    assert "GPU" not in replica_bundle(cfg.teacher, HOST)
    assert fit_problems(cfg, [{"CPU": 32, "GPU": 8, "memory": 64 * GiB}], host_memory=HOST) == []


def test_replicas_follow_training_onto_gpus_unless_told_otherwise():
    cfg = config(train={"use_gpu": True}, teacher={"tensor_parallel_size": 2})
    assert train_bundle(cfg.train) == {"CPU": 1.0, "GPU": 1.0}
    assert replica_bundle(cfg.teacher) == {"CPU": 1.0, "GPU": 2.0}
    assert replica_bundle(cfg.student) == {"CPU": 1.0, "GPU": 1.0}
    cpu_teacher = config(train={"use_gpu": True}, teacher={"use_gpu": False})
    assert replica_bundle(cpu_teacher.teacher, HOST) == {"CPU": 1.0, "memory": float(int(0.3 * HOST))}


def test_tensor_parallel_replicas_must_fit_on_one_node():
    cfg = config(train={"use_gpu": True}, teacher={"tensor_parallel_size": 4, "keep_warm": False})
    two_nodes = [{"CPU": 16, "GPU": 2}, {"CPU": 16, "GPU": 2}]  # 4 GPUs, but 2 per node
    problems = fit_problems(cfg, two_nodes, host_memory=HOST)
    assert len(problems) == 1
    assert "teacher needs 1 replica(s) of 1 CPU + 4 GPU each, every replica on one node" in \
        problems[0] and "the largest 16 CPU, 2 GPU" in problems[0]
    assert fit_problems(cfg, [{"CPU": 16, "GPU": 4}], host_memory=HOST) == []


def test_a_warm_teacher_that_leaves_no_gpu_for_training_is_refused_with_the_fix():
    cfg = config(train={"use_gpu": True, "num_workers": 1})
    problems = fit_problems(cfg, [{"CPU": 8, "GPU": 1}], host_memory=HOST)
    assert problems and all("teacher.keep_warm: false" in p for p in problems)
    assert fit_problems(config(train={"use_gpu": True, "num_workers": 1},
                               teacher={"keep_warm": False}), [{"CPU": 8, "GPU": 1}], host_memory=HOST) == []


def test_too_many_train_workers_are_named():
    problems = fit_problems(config(train={"num_workers": 12, "batch_size": 24}), LOCAL, host_memory=HOST)
    assert problems[0].startswith("training needs 12 worker(s) of 1 CPU each")
    assert "lower train.num_workers" in problems[0]


def test_pack_places_bundles_on_nodes_without_splitting_one():
    assert pack([{"CPU": 4}, {"CPU": 4}], [{"CPU": 3}, {"CPU": 3}])
    assert not pack([{"CPU": 4}, {"CPU": 4}], [{"CPU": 3}, {"CPU": 3}, {"CPU": 3}])
    assert not pack([{"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1}], [{"CPU": 1, "GPU": 2}])
    assert pack([{"CPU": 2, "GPU": 2}], [{"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}])


def test_a_custom_label_keeps_replicas_on_the_nodes_that_have_it():
    cfg = config(teacher={"resources": {"teacher_node": 1}})
    assert replica_bundle(cfg.teacher, HOST) == {"CPU": 1.0, "memory": float(int(0.3 * HOST)),
                                                 "teacher_node": 1.0}
    problems = fit_problems(cfg, LOCAL, host_memory=HOST)
    assert problems and "teacher needs 1 replica(s) of 1 CPU + 7.2 GiB memory + 1 " \
                        "teacher_node" in problems[0]
    labelled = {"CPU": 2, "memory": 8 * GiB, "teacher_node": 1}
    assert fit_problems(cfg, [*LOCAL, labelled], host_memory=HOST) == []


def test_cpu_engines_reserve_the_memory_vllm_takes_and_must_fit_beside_each_other():
    cfg = config(teacher={"gpu_memory_utilization": 0.5})
    problems = fit_problems(cfg, LOCAL, host_memory=HOST)  # 12 GiB + the student's 7.2 > 16
    assert len(problems) == 1 and "leave no room for the student's replicas" in problems[0]
    assert "gpu_memory_utilization" in problems[0]
    assert fit_problems(config(teacher={"gpu_memory_utilization": 0.2}), LOCAL,
                        host_memory=HOST) == []


def test_a_cpu_train_worker_reserves_the_memory_it_will_use():
    smollm2 = 134_515_008  # parameters of the bundled student
    cfg = config()
    bundle = train_bundle(cfg.train, smollm2)
    assert bundle["CPU"] == 1.0 and 3.1 * GiB < bundle["memory"] < 3.4 * GiB  # 3.4 GB measured
    assert "memory" not in train_bundle(cfg.train)  # unknown model: no estimate
    assert "memory" not in train_bundle(config(train={"use_gpu": True}).train, smollm2)
    assert train_bundle(config(train={"memory_per_worker": 2}).train, smollm2)["memory"] == 2 * GiB
    assert "memory" not in train_bundle(config(train={"memory_per_worker": 0}).train, smollm2)
    # the default job still fits here: the warm teacher (7.2 GiB) beside its worker (3.2 GiB)
    assert fit_problems(cfg, LOCAL, host_memory=HOST, student_parameters=smollm2) == []
    small = [{"CPU": 8, "GPU": 0, "memory": 3 * GiB}]
    problems = fit_problems(config(teacher={"keep_warm": False}), small, host_memory=HOST,
                            student_parameters=smollm2)
    assert any(p.startswith("training needs 1 worker(s) of 1 CPU + 3.2 GiB memory each")
               and "train.memory_per_worker" in p for p in problems)


def test_a_lora_student_served_by_the_teachers_engines_reserves_no_engine_of_its_own():
    # the demo on this machine: both engines kept warm would leave training no room
    smollm2 = 134_515_008
    cfg = config(student={"lora": {"rank": 16}})
    assert cfg.student.keep_warm and cfg.teacher.keep_warm
    problems = fit_problems(cfg, LOCAL, host_memory=HOST, student_parameters=smollm2)
    assert len(problems) == 1 and "leave no room for training" in problems[0]
    assert fit_problems(cfg, LOCAL, host_memory=HOST, student_parameters=smollm2,
                        student_on_teacher=True) == []
    # ... and LoRA training reserves less: the frozen base needs no optimizer state
    assert train_bundle(cfg.train, smollm2, lora=True)["memory"] < \
        train_bundle(cfg.train, smollm2)["memory"] - 1.2 * GiB
