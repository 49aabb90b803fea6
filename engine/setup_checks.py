"""What each way of using camfx needs on this machine, checked, with what to do when it is not
there: the virtual camera of a video call (v4l2loopback on Linux, OBS Virtual Camera on Windows
and macOS), the browser's secure origin for a page on another machine. `camfx doctor` prints them.

Everything the checks read comes through `System` (the file system's roots, the platform, how to
import and run things), so they run against a made-up /sys or /dev as well as the real ones.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MODPROBE = "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=camfx"
# The EFI variable that says whether Secure Boot is on (its last byte: 1).
SECURE_BOOT_VAR = "firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
# How each family of Linux distributions installs v4l2loopback (kernel module built by DKMS / akmods).
INSTALL = {
    "debian": "sudo apt install v4l2loopback-dkms linux-headers-$(uname -r)",
    "ubuntu": "sudo apt install v4l2loopback-dkms linux-headers-$(uname -r)",
    "fedora": "sudo dnf install akmod-v4l2loopback (from RPM Fusion: rpmfusion.org/Configuration)",
    "rhel": "sudo dnf install akmod-v4l2loopback (from RPM Fusion, with EPEL)",
    "arch": "sudo pacman -S v4l2loopback-dkms linux-headers",
    "opensuse": "sudo zypper install v4l2loopback-kmp-default",
    "suse": "sudo zypper install v4l2loopback-kmp-default",
    "gentoo": "sudo emerge media-video/v4l2loopback",
    "nixos": "boot.extraModulePackages = [ config.boot.kernelPackages.v4l2loopback ]; in configuration.nix",
}
ANY_DISTRO = "install your distribution's v4l2loopback package (often v4l2loopback-dkms) and the kernel headers"


@dataclass
class System:
    """Where the checks look; the defaults are this machine."""

    platform: str = sys.platform
    root: Path = Path("/")  # /sys, /dev, /etc, /lib/modules and /proc under it
    kernel: str = field(default_factory=lambda: os.uname().release if hasattr(os, "uname") else "")
    importable: Callable[[str], bool] = lambda name: importlib.util.find_spec(name) is not None
    program_files: Path = Path(os.environ.get("ProgramFiles", r"C:\Program Files"))

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


@dataclass
class Check:
    """One finding: `ok` True (fine), False (this scenario will not work until `fix` is done) or
    None (a note: it works, with a caveat)."""

    what: str
    ok: bool | None
    finding: str
    fix: str = ""


@dataclass
class VideoDevice:
    path: str
    name: str
    loopback: bool
    exclusive_caps: bool | None = None  # loopbacks only, where the module says


# ---- the virtual camera ----------------------------------------------------------------------------
def virtual_camera(system: System | None = None) -> list[Check]:
    """What `camfx camera --output virtual` needs here."""
    system = system or System()
    checks = [_pyvirtualcam(system)]
    if system.platform.startswith("linux"):
        checks += _linux_loopback(system)
    elif system.platform in ("win32", "darwin"):
        checks.append(_obs_virtual_camera(system))
    else:
        checks.append(Check("virtual camera", False, f"pyvirtualcam has no virtual camera on {system.platform}",
                            "write to a file instead (--output out.mp4)"))
    return checks


def _pyvirtualcam(system: System) -> Check:
    if system.importable("pyvirtualcam"):
        return Check("pyvirtualcam", True, "installed")
    return Check("pyvirtualcam", False, "not installed", "pip install 'camfx[camera]'")


def _linux_loopback(system: System) -> list[Check]:
    checks = []
    loaded = system.path("sys", "module", "v4l2loopback").is_dir()
    secure_boot = _secure_boot(system)
    if loaded:
        checks.append(Check("v4l2loopback", True, "the kernel module is loaded"))
    elif _module_installed(system):
        checks.append(Check("v4l2loopback", False, "installed but not loaded", f"load it: {MODPROBE}"))
    else:
        checks.append(Check("v4l2loopback", False, "the kernel module is not installed",
                            f"{_install_command(system)}, then load it: {MODPROBE}"))
    if secure_boot and not loaded:
        checks.append(Check("Secure Boot", None, "on: the kernel loads only signed modules",
                            "if modprobe says 'Key was rejected by service', enroll the key the package's "
                            "installer made (sudo mokutil --import, then reboot and confirm), or sign the module"))
    devices = video_devices(system)
    if not devices:
        checks.append(Check("/dev/video*", False if loaded else None, "no video devices",
                            MODPROBE if loaded else ""))
    for device in devices:
        if not device.loopback:
            checks.append(Check(device.path, True, f"{device.name!r}: a camera (an input, e.g. --input {device.path})"))
        elif device.exclusive_caps is False:
            checks.append(Check(device.path, False, f"{device.name!r}: v4l2loopback, without exclusive_caps: Chrome, "
                                "Zoom and Teams do not list it", f"sudo modprobe -r v4l2loopback && {MODPROBE}"))
        else:
            checks.append(Check(device.path, True, f"{device.name!r}: v4l2loopback, a virtual camera "
                                f"(--device-path {device.path})"))
    if loaded and devices and not any(d.loopback for d in devices):
        checks.append(Check("virtual camera", False, "v4l2loopback is loaded but made no device",
                            f"sudo modprobe -r v4l2loopback && {MODPROBE}"))
    return checks


def video_devices(system: System) -> list[VideoDevice]:
    """/dev/video* with their names (sysfs), and which are v4l2loopback devices: theirs is a
    virtual device (no bus, no hardware) or the module's driver."""
    classes = system.path("sys", "class", "video4linux")
    if not classes.is_dir():
        return []
    caps = _exclusive_caps(system)
    devices, loopbacks = [], 0
    for entry in sorted(classes.iterdir(), key=lambda p: _number(p.name)):
        if not entry.name.startswith("video"):
            continue
        name = _read(entry / "name") or "?"
        target = os.path.realpath(entry)
        driver = os.path.basename(os.path.realpath(entry / "device" / "driver")) if (entry / "device" / "driver").exists() else ""
        loopback = "/devices/virtual/" in target or driver == "v4l2loopback"
        exclusive = None
        if loopback:
            exclusive = caps[loopbacks] if loopbacks < len(caps) else None
            loopbacks += 1
        devices.append(VideoDevice(f"/dev/{entry.name}", name, loopback, exclusive))
    return devices


def _exclusive_caps(system: System) -> list[bool]:
    """The module's exclusive_caps per device it made ("Y,N,..."), in the order it made them."""
    text = _read(system.path("sys", "module", "v4l2loopback", "parameters", "exclusive_caps"))
    return [value.strip() in ("Y", "1") for value in text.split(",")] if text else []


def _module_installed(system: System) -> bool:
    folder = system.path("lib", "modules", system.kernel)
    if not folder.is_dir():
        return False
    dependencies = _read(folder / "modules.dep")  # "updates/dkms/v4l2loopback.ko.zst: videodev.ko ..."
    if dependencies:
        return any(os.path.basename(line.split(":")[0]).split(".")[0] == "v4l2loopback"
                   for line in dependencies.splitlines())
    return any(folder.rglob("v4l2loopback.ko*"))


def _install_command(system: System) -> str:
    release = _read(system.path("etc", "os-release"))
    ids = []
    for key in ("ID", "ID_LIKE"):
        match = re.search(rf"^{key}=\"?([^\"\n]*)\"?$", release, re.MULTILINE)
        if match:
            ids += match.group(1).split()
    for distro in ids:
        for family, command in INSTALL.items():
            if distro == family or distro.startswith(family):
                return command
    return ANY_DISTRO


def _secure_boot(system: System) -> bool:
    try:
        return system.path("sys", SECURE_BOOT_VAR).read_bytes()[-1:] == b"\x01"
    except OSError:
        return False


def _obs_virtual_camera(system: System) -> Check:
    if system.platform == "win32":
        plugin = system.program_files / "obs-studio" / "data" / "obs-plugins" / "win-dshow"
        found = plugin.is_dir() and any(p.name.startswith("obs-virtualcam-module") for p in plugin.iterdir())
        fix = ("install OBS Studio (obsproject.com), click Start Virtual Camera once and stop it; Zoom, Teams "
               "and Meet then list \"OBS Virtual Camera\", which camfx camera feeds")
    else:
        found = any(system.path(*p).exists() for p in (
            ("Applications", "OBS.app"), ("Library", "CoreMediaIO", "Plug-Ins", "DAL", "obs-mac-virtualcam.plugin")))
        fix = ("install OBS Studio 30 or later (obsproject.com), click Start Virtual Camera once and allow its "
               "system extension in System Settings > Privacy & Security, then stop it")
    if found:
        return Check("OBS Virtual Camera", True, "OBS Studio is installed (start its Virtual Camera once, if "
                     "camfx camera says there is none)")
    return Check("OBS Virtual Camera", False, "OBS Studio is not installed", fix)


# ---- the browser page ------------------------------------------------------------------------------
def browser_origin() -> list[Check]:
    """What a browser needs to give the demo page the camera."""
    return [
        Check("page on this machine", True, "http://127.0.0.1:8080/ (localhost counts as a secure origin)"),
        Check("page from another machine", None, "browsers give a page the camera only over https",
              "camfx serve --host 0.0.0.0 --tls self-signed --token SECRET (or --tls-cert / --tls-key with a "
              "certificate the browser trusts)"),
    ]


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _number(name: str) -> int:
    digits = re.sub(r"\D", "", name)
    return int(digits) if digits else 0
