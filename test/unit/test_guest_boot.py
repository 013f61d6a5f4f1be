"""kvm direct kernel boot (kernel_path, initrd_path, kernel_args) and the accelerator report."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ganeti import errors
from ganeti.hypervisor import procutil
from ganeti.hypervisor.hv_kvm import QEMU_BINARY, KvmHypervisor
from ganeti.objects import Instance
from ganeti.pathutils import Paths


@pytest.fixture
def hv(tmp_path: Path) -> Iterator[KvmHypervisor]:
    paths = Paths.for_root(tmp_path / "node")
    hyp = KvmHypervisor(paths)
    yield hyp
    for name in hyp.list_instances():
        hyp.stop_instance(name, timeout=0, force=True)
    assert procutil.find_processes(str(paths.root)) == [], "qemu processes leaked"


def instance(**hvparams: object) -> Instance:
    return Instance(name="vm1", primary_node="node1", hypervisor="kvm", hvparams=hvparams,
                    beparams={"maxmem": 64, "vcpus": 1})


def files(tmp_path: Path) -> tuple[Path, Path]:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.gz"
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"i")
    return kernel, initrd


def command(hv: KvmHypervisor, inst: Instance) -> list[str]:
    params = hv.fill_parameters(inst.hvparams)
    return hv.build_command(inst, [], False, hv.instance_dir(inst.name), params, 64, 1, "tcg")


def test_defaults_boot_from_disk(hv: KvmHypervisor) -> None:
    params = hv.fill_parameters({})
    assert (params["kernel_path"], params["initrd_path"], params["kernel_args"]) == ("", "", "")
    args = command(hv, instance(kvm_path="/bin/true"))
    assert not {"-kernel", "-initrd", "-append"} & set(args)


def test_kernel_initrd_and_args(hv: KvmHypervisor, tmp_path: Path) -> None:
    kernel, initrd = files(tmp_path)
    args = command(hv, instance(kvm_path="/bin/true", kernel_path=str(kernel),
                                initrd_path=str(initrd), kernel_args="console=ttyS0 quiet"))
    assert args[args.index("-kernel") + 1] == str(kernel)
    assert args[args.index("-initrd") + 1] == str(initrd)
    assert args[args.index("-append") + 1] == "console=ttyS0 quiet"  # one argument
    only_kernel = command(hv, instance(kvm_path="/bin/true", kernel_path=str(kernel)))
    assert "-kernel" in only_kernel and "-initrd" not in only_kernel
    assert "-append" not in only_kernel
    # as in Ganeti, initrd_path and kernel_args only matter with a kernel_path
    no_kernel = command(hv, instance(kvm_path="/bin/true", initrd_path=str(initrd),
                                     kernel_args="quiet"))
    assert not {"-kernel", "-initrd", "-append"} & set(no_kernel)


@pytest.mark.parametrize("key", ["kernel_path", "initrd_path"])
def test_relative_paths_refused(hv: KvmHypervisor, key: str) -> None:
    with pytest.raises(errors.HypervisorError, match=f"parameter {key}=.*absolute path"):
        hv.fill_parameters({key: "boot/vmlinuz"})


@pytest.mark.parametrize("key", ["kernel_path", "initrd_path"])
def test_missing_file_named(hv: KvmHypervisor, tmp_path: Path, key: str) -> None:
    kernel, initrd = files(tmp_path)
    params = {"kernel_path": str(kernel), "initrd_path": str(initrd),
              key: str(tmp_path / "gone")}
    with pytest.raises(errors.HypervisorError, match=f"{key} {tmp_path}/gone is not a file"):
        command(hv, instance(kvm_path="/bin/true", **params))
    with pytest.raises(errors.HypervisorError, match=f"{key} .* is not a file"):
        hv.start_instance(instance(kvm_path="/bin/true", **params), [])
    assert hv.list_instances() == []


@pytest.mark.skipif(shutil.which(QEMU_BINARY) is None,
                    reason=f"{QEMU_BINARY} is not installed (Debian package qemu-system-x86)")
def test_info_reports_the_accelerator(hv: KvmHypervisor, tmp_path: Path) -> None:
    """A paused VM (no guest code runs) is enough to see what qemu was started with."""
    hv.start_instance(instance(kvm_flag="disabled"), [], startup_paused=True)
    info = hv.instance_info("vm1")
    assert info is not None and info.accel == "tcg"
    assert info.to_dict()["accel"] == "tcg"
    hv.stop_instance("vm1", timeout=0, force=True)
    assert hv.instance_info("vm1") is None
