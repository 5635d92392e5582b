"""What a route is, and how one is read from the registry.

A route is the chain of variants that may answer for ``model`` under a selector
(``alias:production``, ``alias:staging`` or ``version:3``), best first. The chain itself is the
registry's rule (``selectors.deployment_chain``: the chosen variant, its ancestors up to the
original, then, for alias routes, the variant that served before the last promotion); serving
keeps the links this server can run: READY links whose version takes the same inputs, one per
file, ONNX first and a TorchScript link last (only where the server loads TorchScript).
``?version=N`` starts from ``selectors.version_chosen_variant``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from modelhub import selectors
from modelhub.errors import NotFound
from modelhub.models import Deployment, RegisteredModel, Variant
from predictions.models import ServingConfig
from predictions.refusals import Unavailable
from predictions.runtime import VariantSpec


@dataclass(frozen=True)
class Route:
    """The variants that may answer for (model, selector), best first, and how to serve them."""

    model_id: int
    model: str
    selector: str
    chain: tuple[VariantSpec, ...]
    cache_ttl_s: int = 0  # 0: no response cache

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """The inputs the primary's signature declares."""
        return self.chain[0].signature.get("inputs", [])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, for the Redis routing table."""
        return {"model_id": self.model_id, "model": self.model, "selector": self.selector,
                "chain": [link.to_dict() for link in self.chain], "cache_ttl_s": self.cache_ttl_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Route:
        """The route ``to_dict`` wrote."""
        return cls(model_id=data["model_id"], model=data["model"], selector=data["selector"],
                   chain=tuple(VariantSpec.from_dict(d) for d in data["chain"]), cache_ttl_s=data["cache_ttl_s"])


def selector_for(*, alias: str | None = None, version: int | None = None) -> str:
    """The selector string of an alias (default production) or a version number."""
    return f"version:{version}" if version is not None else f"alias:{alias or 'production'}"


def build_route(model_name: str, selector: str) -> Route:
    """Read a route from the database (NotFound when the model or its alias/version has none)."""
    model = RegisteredModel.objects.filter(name=model_name).first()
    if model is None:
        raise NotFound(f"No model named {model_name!r}.")
    kind, _, value = selector.partition(":")
    if kind == "version":
        primary, alias = _version_variant(model, int(value)), None
    else:
        primary, alias = _deployed_variant(model, value), value
    chain = _servable([link.variant for link in selectors.deployment_chain(variant=primary, alias=alias)], primary)
    if not chain:
        raise Unavailable(f"No variant of {model_name} ({selector}) can be served by this server.")
    config = ServingConfig.objects.filter(model=model).first()
    ttl = config.cache_ttl_s if config is not None and config.cache_responses else 0
    return Route(model_id=model.pk, model=model.name, selector=selector,
                 chain=tuple(VariantSpec.from_variant(v) for v in chain), cache_ttl_s=ttl)


def _variants() -> Any:
    return Variant.objects.select_related("version__model", "job__profile")


def _version_variant(model: RegisteredModel, number: int) -> Variant:
    """The variant an approver chose for the version, else its own original (see
    ``selectors.version_chosen_variant``): a maintainer's new job never changes what it serves."""
    version = model.versions.filter(number=number, status="READY").first()
    if version is None:
        raise NotFound(f"Model {model.name} has no READY version {number}.")
    chosen = selectors.version_chosen_variant(version)
    if chosen is None:
        raise NotFound(f"Version {number} of {model.name} has no servable variant.")
    return _variants().get(pk=chosen.pk)


def _deployed_variant(model: RegisteredModel, alias: str) -> Variant:
    deployment = Deployment.objects.filter(model=model, alias=alias).first()
    if deployment is None:
        raise NotFound(f"Model {model.name} has no variant deployed under alias {alias!r}.")
    return _variants().get(pk=deployment.variant_id)


def _servable(links: list[Variant], primary: Variant) -> list[Variant]:
    """The links this server can run in the primary's place: same inputs, one per file, ONNX
    first, TorchScript last and only where the settings allow it."""
    inputs = primary.version.signature.get("inputs")
    usable, torch_links, shas = [], [], set()
    for link in links:
        if link.sha256 in shas or link.version.signature.get("inputs") != inputs:
            continue
        shas.add(link.sha256)
        if link.runtime == Variant.Runtime.TORCH:
            if settings.MODELHUB_SERVING_TORCHSCRIPT:
                torch_links.append(link)
            continue
        usable.append(link)
    return usable + torch_links
