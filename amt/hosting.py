"""Stimuli on S3 for MTurk: upload once, then URLs (public-read objects or long-lived presigned URLs).

Uploading happens inside the launch, after its budget check has passed (``Gateway.launch``'s
``stage_stimuli``): a study that cannot be paid for never makes anything public.
"""

from __future__ import annotations

from pathlib import Path

from amt.ledger import Ledger
from amt.study import StudyError


def require_bucket(ledger: Ledger) -> str:
    """The study's bucket; StudyError when it has none (checked before any AWS call)."""
    bucket = ledger.data["study"]["stimuli"].get("bucket")
    if not bucket:
        raise StudyError(f"study {ledger.study_id}: field 'stimuli.bucket' is required to launch on MTurk "
                         f"(HIT pages load their images by URL)")
    return bucket


def referenced_stimuli(ledger: Ledger) -> list[str]:
    """The stimulus files the ledger's items show (never other files that happen to lie in the folder)."""
    return sorted({name for item in ledger.items for name in item["stimuli"].values()})


def upload_stimuli(folder: str | Path, s3_client=None) -> dict[str, str]:
    """Upload every stimulus of the study; records and returns ``{file name: URL}`` in the ledger.

    Object keys are ``<prefix>/<study_id>/<content hash>.png``: nothing in a URL names a method.
    Runs under the study lock (inside a launch, on the launch's own open ledger).
    """
    with Ledger.update(folder) as ledger:
        return _upload(ledger, s3_client)


def _upload(ledger: Ledger, s3_client) -> dict[str, str]:
    hosting = ledger.data["study"]["stimuli"]
    bucket = require_bucket(ledger)
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3")
    urls = ledger.data.setdefault("stimulus_urls", {})
    folder = ledger.folder / "stimuli"
    presigner = _sigv4_client(s3_client, bucket) if hosting["url_mode"] == "presigned" else None
    for name in referenced_stimuli(ledger):
        path = folder / name
        if not path.is_file():
            raise StudyError(f"{path}: stimulus of the ledger is missing; build the study again into a new folder")
        key = f"{hosting['prefix'].strip('/')}/{ledger.study_id}/{name}"
        extra = {"ContentType": "image/png", "CacheControl": "max-age=31536000, immutable"}
        if hosting["url_mode"] == "public":
            extra["ACL"] = "public-read"
        s3_client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), **extra)
        if hosting["url_mode"] == "public":
            urls[name] = public_url(s3_client, bucket, key)
        else:
            assert presigner is not None  # url_mode "presigned" made one above
            urls[name] = presigner.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(hosting["presign_seconds"]))
    ledger.save()
    return dict(urls)


def _sigv4_client(s3_client, bucket: str):
    """Presigned URLs must be SigV4 (SigV2 query signatures are deprecated; they last at most 7 days),
    signed for the bucket's own region (a URL signed for another region is refused)."""
    import boto3
    from botocore.config import Config

    region = s3_client.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    return boto3.client("s3", endpoint_url=s3_client.meta.endpoint_url, region_name=region,
                        config=Config(signature_version="s3v4"))


def public_url(s3_client, bucket: str, key: str) -> str:
    endpoint = s3_client.meta.endpoint_url.rstrip("/")
    if "amazonaws.com" in endpoint:
        return f"https://{bucket}.s3.amazonaws.com/{key}"
    return f"{endpoint}/{bucket}/{key}"  # a custom endpoint (a local S3 server): path-style


def url_lookup(ledger: Ledger):
    urls = ledger.data.get("stimulus_urls", {})

    def image_url(name: str) -> str:
        if name not in urls:
            raise StudyError(f"stimulus {name} was not uploaded; run the launch again")
        return urls[name]

    return image_url


def stage_stimuli(s3_client=None):
    """For ``Gateway.launch``: upload the open ledger's stimuli, then look their URLs up."""
    def stage(ledger: Ledger):
        _upload(ledger, s3_client)
        return url_lookup(ledger)

    return stage
