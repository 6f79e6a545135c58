"""Tiny generated face-like data with a learnable cue, shared by the tests."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def cue_image(fake: bool, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Noise with a warm (fake) or cool (real) cast: learnable by every architecture in a few steps."""
    arr = rng.uniform(0, 160, (size, size, 3))
    arr[..., 0 if fake else 2] += 90
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def write_folder(root: Path, n_per_class: int = 12, seed: int = 0, size: int = 64,
                 real_name: str = "real", fake_name: str = "fake") -> Path:
    rng = np.random.default_rng(seed)
    for name, fake in ((real_name, False), (fake_name, True)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            cue_image(fake, rng, size).save(folder / f"{name}_{i:03d}.png")
    return root


class TinyNet(torch.nn.Module):
    """A tiny conv net for 8x8 inputs: each fit on `tiny_set` takes well under a second."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.linear(torch.relu(self.conv(x)).mean((2, 3))).squeeze(1)


def tiny_set(n, seed):
    """(8x8 noise, is_fake) with a learnable cue: fakes are redder."""
    g = torch.Generator().manual_seed(seed)
    fake = (torch.arange(n) % 2).float()
    x = torch.rand(n, 3, 8, 8, generator=g)
    x[:, 0] += fake[:, None, None]
    return torch.utils.data.TensorDataset(x, fake)


# ------------------------------------------------------------------------------ signed images (Content Credentials)

AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


class SigningCertificates:
    """A root CA and a signing certificate made here (ES256), as C2PA requires: a v3 end-entity certificate with
    digitalSignature and an allowed extended key usage, issued by a CA (self-signed signers are refused)."""

    def __init__(self, organisation: str = "Fakeface Test Signer"):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.timezone.utc)

        def name(common, org):
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                              x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])

        def certificate(subject, issuer, public_key, signing_key, ca: bool):
            usage = dict(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)
            builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(days=1))
                       .not_valid_after(now + datetime.timedelta(days=30))
                       .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                       .add_extension(x509.KeyUsage(**usage), critical=True)
                       .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
            if not ca:
                builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                                                 critical=False)
                           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                               signing_key.public_key()), critical=False))
            return builder.sign(signing_key, hashes.SHA256())

        root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        root_name = name("Fakeface Test Root CA", "Fakeface Test CA")
        root = certificate(root_name, root_name, root_key.public_key(), root_key, ca=True)
        leaf = certificate(name("Test Signer", organisation), root_name, leaf_key.public_key(), root_key, ca=False)
        pem = serialization.Encoding.PEM
        self.root_pem = root.public_bytes(pem)
        self.chain_pem = leaf.public_bytes(pem) + self.root_pem
        self.key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())

    def sign(self, image_bytes: bytes, mime: str, source_type: str = AI_SOURCE, remote_url: str | None = None,
             generator: str = "fakeface-tests", parent: bytes | None = None) -> bytes:
        """`image_bytes` with a C2PA manifest: claim generator, a c2pa.created action with `source_type`, or with a
        `parent` (signed bytes of the same `mime`) an edit of it: c2pa.opened that ingredient, then c2pa.edited."""
        import io

        import c2pa

        actions = ([{"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}, {"action": "c2pa.edited"}]
                   if parent else [{"action": "c2pa.created", "digitalSourceType": source_type}])
        manifest = {"claim_generator_info": [{"name": generator, "version": "1.0"}], "title": "test image",
                    "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}]}
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, self.chain_pem, self.key_pem, None)
        out = io.BytesIO()
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest) as builder:
            if parent:
                builder.add_ingredient({"title": "parent", "relationship": "parentOf", "label": "parent"}, mime,
                                       io.BytesIO(parent))
            if remote_url:
                builder.set_no_embed()
                builder.set_remote_url(remote_url)
            builder.sign(signer, mime, io.BytesIO(image_bytes), out)
        return out.getvalue()


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    """`image` saved as `fmt` (JPEG, PNG, WEBP) in memory."""
    import io

    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()
