"""`camfx doctor`'s checks for each way of using camfx. v4l2loopback cannot be loaded on these
machines (no module, no /dev/video*), so the Linux checks read a made-up /sys, /lib/modules and
/etc laid out as the kernel and the distributions lay them out; Windows and macOS likewise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from camfx.engine import doctor, setup_checks
from camfx.engine.setup_checks import MODPROBE, System

pytestmark = pytest.mark.unit

KERNEL = "6.8.0-test"


def linux(tmp_path: Path, *, loaded=False, installed=False, distro="ubuntu", secure_boot=False,
          devices=(), exclusive_caps="", pyvirtualcam=True) -> System:
    """A Linux machine under tmp_path. `devices`: (number, name, loopback) per /dev/videoN."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(f'NAME="Test"\nID={distro}\n')
    if loaded:
        params = root / "sys" / "module" / "v4l2loopback" / "parameters"
        params.mkdir(parents=True)
        (params / "exclusive_caps").write_text(exclusive_caps + "\n")
    if installed:
        folder = root / "lib" / "modules" / KERNEL
        folder.mkdir(parents=True)
        (folder / "modules.dep").write_text("kernel/drivers/media/usb/uvc/uvcvideo.ko.zst: videodev.ko\n"
                                            "updates/dkms/v4l2loopback.ko.zst: videodev.ko.zst\n")
    if secure_boot:
        var = root / "sys" / setup_checks.SECURE_BOOT_VAR
        var.parent.mkdir(parents=True)
        var.write_bytes(b"\x06\x00\x00\x00\x01")
    classes = root / "sys" / "class" / "video4linux"
    classes.mkdir(parents=True, exist_ok=True)
    for number, name, loopback in devices:
        if loopback:
            real = root / "sys" / "devices" / "virtual" / "video4linux" / f"video{number}"
        else:
            usb = root / "sys" / "devices" / "pci0000:00" / "0000:00:14.0" / "usb1" / "1-1"
            real = usb / "video4linux" / f"video{number}"
            driver = root / "sys" / "bus" / "usb" / "drivers" / "uvcvideo"
            driver.mkdir(parents=True, exist_ok=True)
            if not (usb / "driver").exists():
                usb.mkdir(parents=True, exist_ok=True)
                os.symlink(driver, usb / "driver")
        real.mkdir(parents=True)
        (real / "name").write_text(name + "\n")
        if not loopback:
            os.symlink(real.parent.parent, real / "device")
        os.symlink(real, classes / f"video{number}")
    return System(platform="linux", root=root, kernel=KERNEL,
                  importable=lambda name: pyvirtualcam if name == "pyvirtualcam" else True)


def by_what(checks) -> dict:
    return {c.what: c for c in checks}


def test_a_loaded_loopback_is_found_among_cameras_with_its_caps(tmp_path):
    system = linux(tmp_path, loaded=True, devices=[(0, "Integrated Camera: Integrated C", False), (10, "camfx", True),
                                                   (11, "Dummy video device (0x0001)", True)],
                   exclusive_caps="Y,N,N,N,N,N,N,N")
    devices = setup_checks.video_devices(system)
    assert [(d.path, d.loopback, d.exclusive_caps) for d in devices] == [
        ("/dev/video0", False, None), ("/dev/video10", True, True), ("/dev/video11", True, False)]
    checks = by_what(setup_checks.virtual_camera(system))
    assert checks["v4l2loopback"].ok is True
    assert checks["/dev/video0"].ok is True and "a camera" in checks["/dev/video0"].finding
    assert checks["/dev/video10"].ok is True and "--device-path /dev/video10" in checks["/dev/video10"].finding
    # Without exclusive_caps, Chrome and Zoom do not list the device: reload the module with it.
    assert checks["/dev/video11"].ok is False and "exclusive_caps" in checks["/dev/video11"].finding
    assert checks["/dev/video11"].fix == f"sudo modprobe -r v4l2loopback && {MODPROBE}"
    assert "Secure Boot" not in checks


def test_an_installed_module_that_is_not_loaded_gets_the_modprobe_line(tmp_path):
    checks = by_what(setup_checks.virtual_camera(linux(tmp_path, installed=True, devices=[(0, "Webcam", False)])))
    assert checks["v4l2loopback"].ok is False and checks["v4l2loopback"].finding == "installed but not loaded"
    assert checks["v4l2loopback"].fix == f"load it: {MODPROBE}"


@pytest.mark.parametrize("distro, install", [
    ("ubuntu", "sudo apt install v4l2loopback-dkms linux-headers-$(uname -r)"),
    ("debian", "sudo apt install v4l2loopback-dkms"),
    ("fedora", "sudo dnf install akmod-v4l2loopback"),
    ("arch", "sudo pacman -S v4l2loopback-dkms"),
    ("opensuse-tumbleweed", "sudo zypper install v4l2loopback-kmp-default"),
    ("plan9", setup_checks.ANY_DISTRO),
])
def test_a_missing_module_gets_its_distributions_package(tmp_path, distro, install):
    check = by_what(setup_checks.virtual_camera(linux(tmp_path, distro=distro)))["v4l2loopback"]
    assert check.ok is False and check.finding == "the kernel module is not installed"
    assert check.fix.startswith(install) and check.fix.endswith(f"then load it: {MODPROBE}")


def test_secure_boot_is_noted_while_the_module_is_not_loaded(tmp_path):
    checks = by_what(setup_checks.virtual_camera(linux(tmp_path, installed=True, secure_boot=True)))
    assert checks["Secure Boot"].ok is None and "mokutil" in checks["Secure Boot"].fix
    loaded = by_what(setup_checks.virtual_camera(linux(tmp_path / "2", loaded=True, secure_boot=True,
                                                       devices=[(10, "camfx", True)], exclusive_caps="Y")))
    assert "Secure Boot" not in loaded  # it loaded: the key was fine


def test_a_loaded_module_without_a_device_and_a_missing_package(tmp_path):
    checks = by_what(setup_checks.virtual_camera(linux(tmp_path, loaded=True, pyvirtualcam=False,
                                                       devices=[(0, "Webcam", False)])))
    assert checks["pyvirtualcam"].ok is False and checks["pyvirtualcam"].fix == "pip install 'camfx[camera]'"
    assert checks["virtual camera"].ok is False and "made no device" in checks["virtual camera"].finding


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_windows_and_macos_need_obs_virtual_camera(tmp_path, platform):
    system = System(platform=platform, root=tmp_path, program_files=tmp_path / "Program Files",
                    importable=lambda name: True)
    check = by_what(setup_checks.virtual_camera(system))["OBS Virtual Camera"]
    assert check.ok is False and "obsproject.com" in check.fix and "Start Virtual Camera" in check.fix
    if platform == "win32":
        plugin = tmp_path / "Program Files" / "obs-studio" / "data" / "obs-plugins" / "win-dshow"
        plugin.mkdir(parents=True)
        (plugin / "obs-virtualcam-module64.dll").write_bytes(b"")
    else:
        (tmp_path / "Applications" / "OBS.app").mkdir(parents=True)
    assert by_what(setup_checks.virtual_camera(system))["OBS Virtual Camera"].ok is True


def test_doctor_prints_each_scenario_with_what_to_do(monkeypatch, capsys, tmp_path):
    system = linux(tmp_path, distro="fedora")
    real = setup_checks.virtual_camera
    monkeypatch.setattr(setup_checks, "virtual_camera", lambda: real(system))
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    assert "video call or OBS, through a virtual camera (camfx camera)" in out
    assert "MISSING  v4l2loopback" in out and "-> sudo dnf install akmod-v4l2loopback" in out
    assert "page from another machine" in out and "--tls self-signed" in out  # the secure origin
    assert "onnxruntime" in out  # the runtimes, as before
    assert "the virtual camera is not ready" in out
