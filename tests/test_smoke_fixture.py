from crosslayer.train import evaluate


def test_lenet5_fixture_learns(lenet5_trained, mnist_small):
    assert evaluate(lenet5_trained, mnist_small.test).accuracy > 0.95
