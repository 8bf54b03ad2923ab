"""Light nodes: a protocol-only step (enrolment with a cached partition, and every step of label
discovery and of a round's session except the training one) imports neither torch, scipy nor the
data set loader; the training step imports torch but not torch._dynamo (torch.optim's), scipy or
scikit-learn, and reads only its own cached partition. Each is checked in a fresh process, as
Flower's ``flwr-clientapp`` handles every message."""

import pytest

pytest.importorskip("flwr")

from gptfl_secure.flower.coldstart import capture, replay  # noqa: E402

RUN = {"clients": 3, "cohort": 3, "local-epochs": 1, "label-capacity": 10, "min-client-size": 5}


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    return capture(RUN, tmp_path_factory.mktemp("coldstart"))


def test_protocol_steps_import_neither_torch_nor_the_data(captured, tmp_path):
    protocol = {group: blob for group, blob in captured.items() if "train" not in group}
    assert len(protocol) == 8  # enroll, 5 label-discovery steps (2 with round 1's), 2 of round 1
    rows = replay(protocol, tmp_path)
    for row in rows:
        assert not row["error"] and not row["aborts"], row
        assert not any(row["imported"].values()), (row["exchange"], row["imported"])


def test_the_training_step_reads_only_its_cached_partition(captured, tmp_path):
    [train] = [group for group in captured if "train" in group]
    [row] = replay({train: captured[train]}, tmp_path)
    assert not row["error"] and not row["aborts"], row
    assert row["imported"] == {"torch": True, "torch._dynamo": False, "scipy": False,
                               "sklearn": False}
