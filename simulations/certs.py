"""`latentveil certs`: the keys and certificates of a secured deployment.

    latentveil certs --out DIR --hosts superlink.example.org 10.0.0.5 --sites 8

makes, in DIR:

    ca.crt, ca.key               a certificate authority (EC P-384, 10 years), kept by the operator
    superlink.crt, superlink.key the SuperLink's TLS certificate, signed by the CA, with the given
                                 hosts (and localhost, 127.0.0.1) as subject alternative names
    site_00.key, site_00.pub     one EC P-384 key pair per site in OpenSSH format: the private key
    ...                          for `flower-supernode --auth-supernode-private-key`, the public one
                                 for `flwr supernode register site_00.pub CONNECTION`

Private keys are written with mode 0600. Every file is written atomically; an existing folder
with keys is never overwritten.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.atomic import atomic_path
from common.errors import LatentveilError

LOCAL_HOSTS = ("localhost", "127.0.0.1")


class CertificateError(LatentveilError):
    """A certificate folder that cannot be made or read."""


@dataclass(frozen=True)
class Certificates:
    """Where a deployment's keys and certificates are."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def superlink_cert(self) -> Path:
        return self.folder / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        return self.folder / "superlink.key"

    def site_key(self, site_id: str) -> Path:
        return self.folder / f"{site_id}.key"

    def site_public_key(self, site_id: str) -> Path:
        return self.folder / f"{site_id}.pub"


def _write(path: Path, data: bytes, private: bool = False) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        if private:
            os.chmod(tmp, 0o600)
    if private:
        os.chmod(path, 0o600)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_site_key(certificates: Certificates, site_id: str) -> None:
    """One site's EC P-384 key pair in OpenSSH format (what Flower's node auth reads)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write(certificates.site_key(site_id), private, private=True)
    _write(certificates.site_public_key(site_id), public + f" {site_id}\n".encode())


def make_certificates(
    out: str | Path, hosts: list[str], site_ids: list[str], days: int = 3650
) -> Certificates:
    """A CA, the SuperLink's certificate for `hosts` (plus localhost), one key pair per site."""
    folder = Path(out)
    certificates = Certificates(folder)
    if certificates.ca_cert.exists():
        raise CertificateError(
            f"{folder} already holds certificates ({certificates.ca_cert.name}); keep them or "
            "choose another --out (keys are never overwritten)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_valid_before": now - datetime.timedelta(minutes=5),
             "not_valid_after": now + datetime.timedelta(days=days)}  # fmt: skip

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "latentveil deployment CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid["not_valid_before"])
        .not_valid_after(valid["not_valid_after"])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    names = list(dict.fromkeys([*hosts, *LOCAL_HOSTS]))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid["not_valid_before"])
        .not_valid_after(valid["not_valid_after"])
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA384())
    )

    _write(folder / "ca.key", _private_pem(ca_key), private=True)
    _write(certificates.superlink_key, _private_pem(server_key), private=True)
    _write(certificates.superlink_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    for site_id in site_ids:
        make_site_key(certificates, site_id)
    # the CA certificate last: its presence marks a complete folder
    _write(certificates.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    return certificates
