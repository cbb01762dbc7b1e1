"""Secrets reach a flow run by reference, never by value in its parameters.

A flow run's parameters are stored by the Prefect server in plain text and shown in the UI, and
a ``SecretStr`` sent through the API arrives masked as ``**********`` (which a worker would then
send as the bearer token). So the ``fine-tune`` deployment takes the blob dataset's token and
a credentialed URL (a presigned URL's query string, ``user:pass@``) only as the names of Prefect
``Secret`` blocks (:data:`TOKEN_PARAM`, :data:`URL_PARAM`), loaded inside the flow run:

* the deployment's parameter schema has no ``token``/``signedUrl`` in a blob dataset, and a blob
  ``url`` must have no query string or userinfo, so the API refuses such a flow run before it
  stores anything (:class:`FlowTrainerConfig`);
* a flow called directly (no deployment, no schema) refuses them with :class:`SecretByValue`,
  whose message says which parameter to use instead.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, ConfigDict, Field

from arkor_ops.config import (
    BlobDataset,
    FileDataset,
    HuggingFaceDataset,
    S3Dataset,
    TrainerConfig,
    split_url_credentials,
)

TOKEN_PARAM = "dataset_token_block"
URL_PARAM = "dataset_url_block"


class SecretByValue(ValueError):  # noqa: N818 - reads as the flow run's failure reason
    """A secret was given as a parameter value; the message says how to pass a reference."""


def _blob_schema(schema: dict[str, Any]) -> None:
    props = schema.get("properties") or {}
    props.pop("token", None)
    props.pop("signedUrl", None)
    if "url" in props:
        props["url"]["pattern"] = r"^https?://[^/?#@]+(/[^?#]*)?$"
        props["url"]["description"] = (
            "HTTP(S) URL of the dataset file, without credentials (no query string, no "
            f"user:pass@): give a presigned URL as a Prefect Secret block named by `{URL_PARAM}`."
        )


class FlowBlobDataset(BlobDataset):
    """:class:`BlobDataset` as a flow parameter: its schema has no place for a secret."""

    model_config = ConfigDict(json_schema_extra=_blob_schema)


class FlowTrainerConfig(TrainerConfig):
    """:class:`TrainerConfig` as a flow parameter (validates the same; see the module doc)."""

    dataset: Annotated[
        HuggingFaceDataset | FlowBlobDataset | S3Dataset | FileDataset,
        Field(discriminator="type"),
    ] = Field(
        validation_alias=AliasChoices("dataset", "datasetSource", "dataset_source"),
        description="Where the training rows come from (secrets by reference: "
        f"`{TOKEN_PARAM}`, `{URL_PARAM}`).",
    )


def refuse_inline_secrets(config: TrainerConfig) -> None:
    """Raise :class:`SecretByValue` when ``config`` carries a secret by value.

    Raises:
        SecretByValue: a blob token or a URL with credentials; the message names the parameter
            that takes a Secret block's name instead (and never the value).
    """
    dataset = config.dataset
    if not isinstance(dataset, BlobDataset):
        return
    if dataset.token is not None:
        raise SecretByValue(
            "config.dataset.token: flow parameters are stored in plain text (and a masked "
            "value arrives as '**********'), so a token is never taken by value. Store it in a "
            "Prefect Secret block (`Secret(value=...).save('name')` or the UI's Blocks page) and "
            f"pass the block's name as the `{TOKEN_PARAM}` parameter."
        )
    if dataset.signed_url is not None:
        raise SecretByValue(
            "config.dataset.url has credentials (a query string or user:pass@), which would be "
            "stored with the flow run's parameters. Give the URL without them as "
            "config.dataset.url, store the full URL in a Prefect Secret block and pass the "
            f"block's name as the `{URL_PARAM}` parameter."
        )


async def _load(block: str, param: str) -> str:
    from prefect.blocks.system import Secret
    from prefect.exceptions import ObjectNotFound

    try:
        secret: Secret[str] = await Secret.aload(block)
    except (ValueError, ObjectNotFound) as exc:
        raise SecretByValue(
            f"{param}={block!r}: no Prefect Secret block of that name ({exc.__class__.__name__})"
        ) from None
    value: object = secret.get()
    if not isinstance(value, str) or not value:
        raise SecretByValue(f"{param}={block!r}: the Secret block must hold a non-empty string")
    return value


async def with_secret_refs(
    config: TrainerConfig, token_block: str | None, url_block: str | None
) -> TrainerConfig:
    """``config`` with the secrets that the named Prefect Secret blocks hold.

    Args:
        config: the flow's config parameter (refused if it holds a secret by value).
        token_block: name of the Secret block with the blob dataset's bearer token.
        url_block: name of the Secret block with the blob URL including its credentials; its
            form without them must be ``config.dataset.url``.

    Returns:
        The config to run (secrets as ``SecretStr``, never logged or stored by the flow).

    Raises:
        SecretByValue: a secret by value, a reference for a dataset that is not a blob, a
            missing block, or a URL that does not match ``config.dataset.url``.
    """
    refuse_inline_secrets(config)
    if not token_block and not url_block:
        return config
    dataset = config.dataset
    if not isinstance(dataset, BlobDataset):
        raise SecretByValue(
            f"{TOKEN_PARAM}/{URL_PARAM} are for a blob dataset; this config's dataset is "
            f"{dataset.type!r}"
        )
    fields = dataset.model_dump(by_alias=False, exclude={"token", "signed_url"})
    if token_block:
        fields["token"] = await _load(token_block, TOKEN_PARAM)
    if url_block:
        url = await _load(url_block, URL_PARAM)
        if split_url_credentials(url)[0] != dataset.url:
            raise SecretByValue(
                f"{URL_PARAM}={url_block!r}: the URL in the block, without its credentials, "
                f"must equal config.dataset.url ({dataset.url})"
            )
        fields["url"] = url
    return config.model_copy(update={"dataset": BlobDataset.model_validate(fields)})
