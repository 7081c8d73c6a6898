"""Envelope encryption throughput and memory: ModelShield vs aws-encryption-sdk vs raw AES-GCM vs SHA-256.

    .venv/bin/python benchmarks/crypto_bench.py                    # 256 MiB and 1 GiB, every case
    .venv/bin/python benchmarks/crypto_bench.py --sizes 4G --cases ms-encrypt+sha256,ms-decrypt+sha256
    .venv/bin/python benchmarks/crypto_bench.py --sink file        # write outputs to disk instead

Each case runs in its own subprocess so that its peak RSS (/proc VmHWM) is its own. Inputs are
random files in --workdir, read from the page cache (they were just written). Keys are local static
AES keys (no KMS), so the numbers measure the message format. Output goes to /dev/null by default:
in the pipeline it goes to S3 over the network, and a local disk write would measure the disk (use
--sink file to see that). GB/s here is 10^9 bytes per second of plaintext.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peak_rss import peak_rss_bytes  # benchmarks/ is sys.path[0] for its scripts

MiB = 1024 * 1024
WRAPPING_KEY = bytes(range(32))  # benchmark key: protects nothing
PROVIDER_ID, KEY_NAME = "modelshield-bench", "static"
CONTEXT = {"artifact": "benchmark", "purpose": "bench"}

CASES = {
    "sha256": "SHA-256 alone (read + hash, one thread)",
    "aes-gcm-raw": "raw AES-GCM, 4 MiB chunks (read + encrypt_into + write, no format)",
    "ms-encrypt-4MiB": "ModelShield encrypt, 4 MiB frames, no hashing",
    "ms-encrypt-1MiB": "ModelShield encrypt, 1 MiB frames, no hashing",
    "ms-encrypt+sha256": "ModelShield pipeline step: SHA-256 + encrypt, 4 MiB frames",
    "ms-decrypt-4MiB": "ModelShield decrypt, 4 MiB frames, no hashing",
    "ms-decrypt+sha256": "ModelShield decrypt + SHA-256 of the plaintext (what decrypt_to does)",
    "sdk-encrypt-4MiB": "aws-encryption-sdk encrypt, same suite, 4 MiB frames",
    "sdk-encrypt-1MiB": "aws-encryption-sdk encrypt, same suite, 1 MiB frames",
    "sdk-decrypt-4MiB": "aws-encryption-sdk decrypt, 4 MiB frames",
    "sdk-decrypt-1MiB": "aws-encryption-sdk decrypt, 1 MiB frames",
}


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def human(size: int) -> str:
    return f"{size // (1024 * MiB)} GiB" if size % (1024 * MiB) == 0 else f"{size // MiB} MiB"


# -- child side: one case, timed, printing one JSON line ------------------------------------------
def _sdk_provider() -> Any:
    from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

    class Provider(RawMasterKeyProvider):
        provider_id = PROVIDER_ID

        def _get_raw_key(self, key_id: bytes) -> WrappingKey:
            return WrappingKey(
                wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                wrapping_key=WRAPPING_KEY,
                wrapping_key_type=EncryptionKeyType.SYMMETRIC,
            )

    provider = Provider()
    provider.add_master_key(KEY_NAME.encode())
    return provider


def _keyring() -> Any:
    from modelshield.crypto.keyring import StaticKeyring

    return StaticKeyring(WRAPPING_KEY, provider_id=PROVIDER_ID, key_name=KEY_NAME)


def _frame(case: str) -> int:
    return MiB if case.endswith("1MiB") else 4 * MiB


def run_case(
    case: str, plaintext: Path, ciphertexts: dict[str, Path], sink: str, workdir: Path
) -> dict[str, Any]:
    import hashlib

    # Imports happen before the clock starts: the numbers are for the work, not for loading modules.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if case.startswith("ms-"):
        from modelshield.crypto.streams import Expectation, decrypt_stream, encrypt_stream
    if case.startswith("sdk-"):
        import aws_encryption_sdk
        from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy

    out_path = workdir / f"out-{case}.bin"
    dst = open(os.devnull if sink == "null" else out_path, "wb")
    check = ""
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if case == "sha256":
        digest = hashlib.sha256()
        buffer = bytearray(8 * MiB)
        with open(plaintext, "rb", buffering=0) as src:
            while n := src.readinto(buffer):
                digest.update(memoryview(buffer)[:n])
        check = digest.hexdigest()
    elif case == "aes-gcm-raw":
        aead, buffer, out = AESGCM(bytes(32)), bytearray(4 * MiB), bytearray(4 * MiB + 16)
        with open(plaintext, "rb", buffering=0) as src:
            counter = 0
            while n := src.readinto(buffer):
                counter += 1
                aead.encrypt_into(
                    counter.to_bytes(12, "big"), memoryview(buffer)[:n], b"", memoryview(out)[: n + 16]
                )
                dst.write(memoryview(out)[: n + 16])
    elif case.startswith("ms-encrypt"):
        keyring = _keyring()
        with open(plaintext, "rb") as src:
            result = encrypt_stream(
                src,
                dst,
                data_key=keyring.generate(KEY_NAME, CONTEXT),
                context=CONTEXT,
                frame_length=_frame(case),
                hash_plaintext=case.endswith("sha256"),
            )
        check = result.plaintext_sha256 or ""
    elif case.startswith("ms-decrypt"):
        with open(ciphertexts[f"{_frame(case) // MiB}MiB"], "rb") as src:
            result = decrypt_stream(
                src, dst, hash_plaintext=case.endswith("sha256"), expect=Expectation(_keyring(), CONTEXT)
            )
        check = result.plaintext_sha256 or ""
    elif case.startswith("sdk-"):
        client = aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
        )
        frame = _frame(case)
        if case.startswith("sdk-encrypt"):
            source = open(plaintext, "rb")
            options = {
                "mode": "e",
                "algorithm": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
                "frame_length": frame,
                "encryption_context": CONTEXT,
            }
        else:
            source = open(ciphertexts[f"{frame // MiB}MiB"], "rb")
            options = {"mode": "d"}
        with source, client.stream(source=source, key_provider=_sdk_provider(), **options) as stream:
            while chunk := stream.read(frame):  # read(frame) is the library's fastest pattern here
                dst.write(chunk)
    else:
        raise SystemExit(f"unknown case {case}")
    seconds = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    dst.close()
    out_path.unlink(missing_ok=True)
    return {
        "case": case,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_bytes": peak_rss_bytes(),
        "check": check,
    }


# -- parent side ----------------------------------------------------------------------------------
def _make_input(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(left, 64 * MiB)
            out.write(os.urandom(n))
            left -= n


def _make_ciphertexts(plaintext: Path, workdir: Path, size: int) -> dict[str, Path]:
    from modelshield.crypto.streams import encrypt_file

    keyring = _keyring()
    made = {}
    for frames in (1, 4):
        path = workdir / f"input-{size}.{frames}MiB.enc"
        if not path.exists():
            encrypt_file(
                plaintext, path, keyring=keyring, key_id=KEY_NAME, context=CONTEXT, frame_length=frames * MiB
            )
        made[f"{frames}MiB"] = path
    return made


def _run_child(
    case: str, plaintext: Path, ciphertexts: dict[str, Path], sink: str, workdir: Path
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        case,
        "--plaintext",
        str(plaintext),
        "--ciphertexts",
        json.dumps({k: str(v) for k, v in ciphertexts.items()}),
        "--sink",
        sink,
        "--workdir",
        str(workdir),
    ]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="256M,1G", help="comma-separated input sizes (e.g. 256M,1G,4G)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases: " + ", ".join(CASES))
    parser.add_argument("--sink", choices=("null", "file"), default="null", help="where outputs go")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is reported")
    parser.add_argument("--workdir", type=Path, help="directory for inputs (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--plaintext", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ciphertexts", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        ciphertexts = {k: Path(v) for k, v in json.loads(args.ciphertexts).items()}
        print(json.dumps(run_case(args.child, args.plaintext, ciphertexts, args.sink, args.workdir)))
        return

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases: {', '.join(unknown)}")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="ms-bench-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        results = []
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        print(f"# {time.strftime('%Y-%m-%d')}, {machine}")
        print(f"# sink: {args.sink}; each case in its own process; best of {args.repeat}")
        print(f"# load average before the run (other work on this machine): {os.getloadavg()[0]:.2f}")
        for size in sizes:
            plaintext = workdir / f"input-{size}.bin"
            _make_input(plaintext, size)
            ciphertexts = _make_ciphertexts(plaintext, workdir, size)
            print(f"\n## {human(size)}\n")
            print(f"| {'case':<20} | {'GB/s':>6} | {'seconds':>7} | {'CPU s/GB':>8} | {'peak RSS MB':>11} |")
            print(f"|{'-' * 22}|{'-' * 8}|{'-' * 9}|{'-' * 10}|{'-' * 13}|")
            by_case: dict[str, dict[str, Any]] = {}
            for case in cases:
                runs = [
                    _run_child(case, plaintext, ciphertexts, args.sink, workdir) for _ in range(args.repeat)
                ]
                best = min(runs, key=lambda r: r["seconds"])
                best.update(
                    size=size, gbps=size / best["seconds"] / 1e9, peak_rss_mb=best["peak_rss_bytes"] / 1e6
                )
                by_case[case] = best
                results.append(best)
                print(
                    f"| {case:<20} | {best['gbps']:>6.2f} | {best['seconds']:>7.2f} "
                    f"| {best['cpu_seconds'] / (size / 1e9):>8.2f} "
                    f"| {best['peak_rss_mb']:>11.0f} |"
                )
            digests = {r["check"] for r in by_case.values() if r["check"]}
            if len(digests) > 1:
                raise SystemExit(f"cases disagree on the plaintext digest: {digests}")
            ratios = [
                ("ms-encrypt-4MiB", "sdk-encrypt-4MiB", "encrypt vs library, 4 MiB frames"),
                ("ms-encrypt-1MiB", "sdk-encrypt-1MiB", "encrypt vs library, 1 MiB frames"),
                ("ms-decrypt-4MiB", "sdk-decrypt-4MiB", "decrypt vs library, 4 MiB frames"),
                ("ms-encrypt+sha256", "sha256", "pipeline step (hash + encrypt) vs SHA-256 alone"),
            ]
            print()
            for ours, theirs, label in ratios:
                if ours in by_case and theirs in by_case:
                    print(f"- {label}: {by_case[ours]['gbps'] / by_case[theirs]['gbps']:.2f}x")
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
