"""https: a certificate from files, or a self-signed one made once and kept.

Browsers give a page the camera only on a secure origin (https, or localhost), so a camfx on a
GPU box that other machines open needs TLS. `--tls self-signed` makes a certificate for this
machine's names and addresses with `cryptography` (which aiortc already brings), keeps it under
the cache folder, and the server prints its SHA-256 fingerprint so a user can check what the
browser shows before accepting it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path

VALID_DAYS = 825  # the most browsers accept for a leaf certificate


class TLSError(ValueError):
    """The certificate or key cannot be used; the message says which and why."""


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise TLSError(f"no such file: {exc.filename}") from None
    except ssl.SSLError as exc:
        raise TLSError(f"{cert} and {key} are not a certificate and its key in PEM ({exc.reason})") from None
    return context


def fingerprint(cert: str | Path) -> str:
    """SHA-256 of the certificate, as browsers show it (AB:CD:...)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificate = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def machine_names() -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) this machine answers to."""
    import ifaddr

    names = sorted({"localhost", socket.gethostname(), socket.getfqdn()} - {""})
    addresses = {"127.0.0.1", "::1"}
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            addresses.add(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return names, sorted(a for a in addresses if "%" not in a)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) for this machine, made on first use and kept in `directory`; made
    again when this machine's names changed or the certificate is about to expire."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    names, addresses = machine_names()
    cert_path, key_path = directory / "self-signed.pem", directory / "self-signed.key"
    if cert_path.is_file() and key_path.is_file():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        covered = set(sans.get_values_for_type(x509.DNSName)) | {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
        fresh = current.not_valid_after_utc - datetime.timedelta(days=30) > datetime.datetime.now(datetime.timezone.utc)
        if fresh and covered >= set(names) | set(addresses):
            return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"camfx on {socket.gethostname()}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    tmp_key = key_path.with_suffix(".partial")
    tmp_key.touch(mode=0o600)
    tmp_key.write_bytes(key_bytes)
    os.replace(tmp_key, key_path)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
