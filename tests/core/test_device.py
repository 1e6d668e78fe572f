"""require_device: a requested device is checked before any work, with a typed, readable error."""

import pytest
import torch

from molediff.core.device import DeviceUnavailableError, require_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_cpu_and_default():
    assert require_device(None) == torch.device("cpu")
    assert require_device("cpu") == torch.device("cpu")
    assert require_device(torch.device("cpu")) == torch.device("cpu")


def test_a_name_that_is_not_a_device():
    with pytest.raises(DeviceUnavailableError, match="'gpu0' is not a torch device"):
        require_device("gpu0")
    assert issubclass(DeviceUnavailableError, ValueError)


@no_cuda
def test_cuda_without_cuda_names_the_device_and_the_reason():
    with pytest.raises(DeviceUnavailableError, match=r"device 'cuda:1' is not usable here \(torch "):
        require_device("cuda:1")


@no_cuda
def test_loaders_check_the_device_first():
    from molediff.chem.model import load_conformer_model
    from molediff.pointcloud.sample import load_point_model

    with pytest.raises(DeviceUnavailableError, match="'cuda'"):
        load_conformer_model(device="cuda")
    with pytest.raises(DeviceUnavailableError, match="'cuda'"):
        load_point_model("does/not/matter.json", device="cuda")
