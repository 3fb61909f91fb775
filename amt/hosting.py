"""Stimuli on S3 for MTurk: upload once, then URLs (public-read objects or long-lived presigned URLs)."""

from __future__ import annotations


from amt.ledger import Ledger
from amt.study import StudyError


def upload_stimuli(ledger: Ledger, s3_client=None) -> dict[str, str]:
    """Upload every stimulus of the study; records and returns ``{file name: URL}`` in the ledger.

    Object keys are ``<prefix>/<study_id>/<content hash>.png``: nothing in a URL names a method.
    """
    hosting = ledger.data["study"]["stimuli"]
    bucket = hosting.get("bucket")
    if not bucket:
        raise StudyError(f"study {ledger.study_id}: field 'stimuli.bucket' is required to launch on MTurk "
                         f"(HIT pages load their images by URL)")
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3")
    urls = ledger.data.setdefault("stimulus_urls", {})
    folder = ledger.folder / "stimuli"
    presigner = _sigv4_client(s3_client, bucket) if hosting["url_mode"] == "presigned" else None
    for path in sorted(folder.glob("*.png")):
        key = f"{hosting['prefix'].strip('/')}/{ledger.study_id}/{path.name}"
        extra = {"ContentType": "image/png", "CacheControl": "max-age=31536000, immutable"}
        if hosting["url_mode"] == "public":
            extra["ACL"] = "public-read"
        s3_client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), **extra)
        if hosting["url_mode"] == "public":
            urls[path.name] = public_url(s3_client, bucket, key)
        else:
            urls[path.name] = presigner.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(hosting["presign_seconds"]))
    ledger.save()
    return urls


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
