"""What the user changed about the key: fields dropped, host matched, versions pinned.

Apart from ``key``, which makes keys, so that the settings (read in every pytest run the
plugin is installed in) hold these rules without loading what makes keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["NO_MODEL", "KeyRules"]

# The label of requests that name no model.
NO_MODEL = "_no_model"


@dataclass(frozen=True)
class KeyRules:
    """What the user changed about the key: fields dropped, host matched, versions pinned."""

    ignore_fields: tuple[str, ...] = ()
    match_host: bool = False
    # alias -> version label, from ini llm_cache_model_versions
    model_versions: Mapping[str, str] = field(default_factory=dict)
    # a pin for every model in one test, from the marker's model_version=
    pinned_version: str | None = None
    # a separate cache (a tenant, an experiment): x-llm-cache namespace=NAME
    namespace: str | None = None

    def version_label(self, model: str | None) -> str:
        """The label that names the model's cassette directory and enters the key:
        ``model``, ``model@version`` when pinned, behind ``namespace+`` in a namespace."""
        if model is None:
            label = NO_MODEL
        else:
            version = self.pinned_version or self.model_versions.get(model)
            label = f"{model}@{version}" if version else model
        return f"{self.namespace}+{label}" if self.namespace else label
