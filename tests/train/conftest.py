import pytest

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (make venv installs it)")


@pytest.fixture(scope="session")
def tiny_policy():
    from tumbler.train.policy import HFPolicy
    torch.set_num_threads(2)
    return HFPolicy.load("tiny", device="cpu", seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_policy):
    return tiny_policy.tokenizer
