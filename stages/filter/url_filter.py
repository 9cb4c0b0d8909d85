"""Map stage `url_filter`: drop documents by their URL, with a reason per list.

Two kinds of list, checked in this order:
- the user's: `allow_domains` / `allow_patterns` keep a document whatever else says (counted
  `allowed`); `block_domains` drops with reason `url:block_domains`, `block_patterns` with
  `url:block_patterns`. A domain matches itself and its subdomains; a pattern is a Python regex
  searched in the whole URL.
- datatrove's `URLFilter` with the block lists it ships (UT1 domain and URL lists, banned words,
  banned subwords, soft-banned words): reason `url:<datatrove reason>`, i.e. `url:domain`,
  `url:subdomain`, `url:url`, `url:hard_blacklisted`, `url:soft_blacklisted`,
  `url:blacklisted_subword`. The lists load once per worker, offline (about 4.5M domains:
  ~0.8 GB of memory and 10-20 s per worker).

Documents without a URL are kept (counted `no_url`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pyarrow as pa

from curate.stages.base import StageOutput, split_by_reason


@dataclass
class URLFilterConfig:
    """Config of the `url_filter` stage."""

    datatrove_lists: bool = True
    """Use datatrove's shipped block lists (reasons `url:domain`, `url:subdomain`, `url:url`,
    `url:hard_blacklisted`, `url:soft_blacklisted`, `url:blacklisted_subword`)."""
    soft_word_threshold: int = 2
    """datatrove: drop when the URL holds at least this many soft-banned words."""
    block_domains: list[str] = field(default_factory=list)
    """Domains to drop, with their subdomains (reason `url:block_domains`), e.g. [example.com]."""
    block_patterns: list[str] = field(default_factory=list)
    """Regexes searched in the URL (reason `url:block_patterns`), e.g. ['/tag/', '\\?replytocom=']."""
    allow_domains: list[str] = field(default_factory=list)
    """Domains (with subdomains) always kept, before any block list."""
    allow_patterns: list[str] = field(default_factory=list)
    """Regexes: a URL matching one is always kept, before any block list."""

    def __post_init__(self):
        if self.soft_word_threshold < 1:
            raise ValueError(f"soft_word_threshold: must be >= 1, got {self.soft_word_threshold}")
        for name in ("block_domains", "allow_domains"):
            bad = [d for d in getattr(self, name) if not d or "/" in d or " " in d]
            if bad:
                raise ValueError(f"{name}: {bad[0]!r} is not a domain (give e.g. example.com, no scheme or path)")
        for name in ("block_patterns", "allow_patterns"):
            for p in getattr(self, name):
                try:
                    re.compile(p)
                except re.error as e:
                    raise ValueError(f"{name}: {p!r} is not a valid regex ({e})") from None


def _domain_set(domains: list[str]) -> frozenset[str]:
    return frozenset(d.lower().strip(".").removeprefix("www.") for d in domains)


def _in_domains(host: str, domains: frozenset[str]) -> bool:
    """`host` or one of its parent domains is in `domains`."""
    parts = host.split(".")
    return any(".".join(parts[i:]) in domains for i in range(len(parts)))


def _compile(patterns: list[str]) -> re.Pattern | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def load_datatrove_filter(soft_word_threshold: int):
    """datatrove's `URLFilter` with its shipped lists, loaded now and without any network."""
    from datatrove.pipeline.filters.url_filter import URLFilter
    from tldextract import TLDExtract

    filt = URLFilter(soft_word_threshold=soft_word_threshold)
    # Its default extractor fetches the public-suffix list over the network; the snapshot that
    # tldextract ships is enough to find registered domains.
    filt.tldextractor = TLDExtract(suffix_list_urls=())
    filt.download_data()  # extracts the shipped archive once per machine, reads it once per worker
    return filt


class URLFilterStage:
    """Drops documents whose URL is on a block list, naming the list in the reason."""

    def __init__(self, config: URLFilterConfig, name: str = "url_filter"):
        self.config = config
        self.name = name
        self._ready = False
        self._dt = None

    def setup(self) -> None:
        cfg = self.config
        self._block_domains, self._allow_domains = _domain_set(cfg.block_domains), _domain_set(cfg.allow_domains)
        self._block_re, self._allow_re = _compile(cfg.block_patterns), _compile(cfg.allow_patterns)
        if cfg.datatrove_lists:
            self._dt = load_datatrove_filter(cfg.soft_word_threshold)
        self._ready = True

    def reason(self, url: str | None) -> str | None:
        if not url:
            return None
        host = (urlsplit(url if "//" in url else "//" + url).hostname or "").removeprefix("www.")
        if _in_domains(host, self._allow_domains) or (self._allow_re and self._allow_re.search(url)):
            return "allowed"
        if _in_domains(host, self._block_domains):
            return "url:block_domains"
        if self._block_re and self._block_re.search(url):
            return "url:block_patterns"
        if self._dt is not None:
            from datatrove.data import Document

            verdict = self._dt.filter(Document(text="", id="", metadata={"url": url}))
            if verdict is not True:
                return f"url:{verdict[1] if isinstance(verdict, tuple) else 'blocked'}"
        return None

    def process(self, table: pa.Table) -> StageOutput:
        if not self._ready:
            self.setup()
        urls = table.column("url").to_pylist() if "url" in table.column_names else [None] * table.num_rows
        counters = {"url_checked": 0, "no_url": 0, "allowed": 0}
        reasons: list[str | None] = []
        for url in urls:
            if not url:
                counters["no_url"] += 1
                reasons.append(None)
                continue
            counters["url_checked"] += 1
            r = self.reason(url)
            counters["allowed"] += r == "allowed"
            reasons.append(None if r == "allowed" else r)
        return split_by_reason(table, self.name, reasons, counters)
