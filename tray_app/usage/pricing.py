"""Cost of one request, from the ``genai-prices`` library (offline: its bundled
price data; no network, never ``UpdatePrices``).

A cost is kept as an integer number of pico-dollars (1e-12 USD): the library
answers in ``Decimal`` and its prices are exact at that scale, so sums in SQL
are exact and a report's number equals the library's own sum. A model the
library does not know has no cost (``None``): it is listed as unpriced, never
guessed.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import genai_prices

log = logging.getLogger(__name__)

SOURCE = "genai-prices"


def _library_version() -> str:
    """The installed version, without importing the library (its price tables take
    longer than a whole report query) nor scanning every installed distribution
    (importlib.metadata): the ``genai_prices-X.dist-info`` folder beside the
    package names it. Falls back to the metadata, then to the library itself."""
    import sys

    for entry in sys.path:  # where the package is, its dist-info is too
        if entry and os.path.isdir(os.path.join(entry, "genai_prices")):
            found = sorted(Path(entry).glob("genai_prices-*.dist-info"))
            if len(found) == 1:
                return found[0].name[len("genai_prices-"):-len(".dist-info")]
            break
    from importlib import metadata

    try:
        return metadata.version("genai-prices")
    except metadata.PackageNotFoundError:  # no metadata (some frozen builds)
        import genai_prices as lib

        return str(lib.__version__)


VERSION: str = _library_version()
PICO = Decimal(10) ** 12

#: the provider whose price list a platform's models are looked up in first
_PROVIDERS = {"claude_code": "anthropic"}


@dataclass(frozen=True)
class Tokens:
    input: int = 0            # not cached (Anthropic's ``input_tokens``)
    output: int = 0
    cache_write: int = 0      # all cache creation
    cache_write_5m: int | None = None
    cache_write_1h: int | None = None
    cache_read: int = 0


def pricing_info() -> dict[str, str]:
    return {"source": SOURCE, "version": VERSION}


def usage_for(t: Tokens) -> genai_prices.Usage:
    """genai-prices counts ``input_tokens`` as every input token, cached or not."""
    kw: dict[str, int] = {"input_tokens": t.input + t.cache_write + t.cache_read, "output_tokens": t.output}
    if t.cache_write:
        kw["cache_write_tokens"] = t.cache_write
        split = (t.cache_write_5m or 0, t.cache_write_1h or 0)
        if sum(split) == t.cache_write:  # only a complete split is passed on
            if split[0]:
                kw["cache_write_5m_tokens"] = split[0]
            if split[1]:
                kw["cache_write_1h_tokens"] = split[1]
    if t.cache_read:
        kw["cache_read_tokens"] = t.cache_read
    import genai_prices

    return genai_prices.Usage(**kw)


@lru_cache(maxsize=512)
def _known(model: str, provider: str | None) -> bool:
    import genai_prices

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            genai_prices.calc_price(genai_prices.Usage(input_tokens=1, output_tokens=1), model,
                                    provider_id=provider)
        return True
    except (LookupError, ValueError):
        return False


def provider_for(platform: str, model: str) -> str | None:
    provider = _PROVIDERS.get(platform)
    if provider is not None and _known(model, provider):
        return provider
    return None


def price(platform: str, model: str | None, tokens: Tokens, at: datetime | None) -> Decimal | None:
    """The library's price of one request in USD, or None when it cannot price it."""
    if not model or not (_known(model, _PROVIDERS.get(platform)) or _known(model, None)):
        return None
    import genai_prices

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calc = genai_prices.calc_price(usage_for(tokens), model, provider_id=provider_for(platform, model),
                                           genai_request_timestamp=at)
    except (LookupError, ValueError) as exc:
        log.debug("usage: cannot price %s: %s", model, exc)
        return None
    return Decimal(calc.total_price)


def to_pico(cost: Decimal | None) -> int | None:
    if cost is None:
        return None
    return int((cost * PICO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def usd(pico: int | None) -> float | None:
    return None if pico is None else float(Decimal(pico) / PICO)


__all__ = ["SOURCE", "VERSION", "Tokens", "price", "to_pico", "usd", "pricing_info", "usage_for"]
