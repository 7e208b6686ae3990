"""dashspool's runtime: the spool protocol, watchers, ledger, scheduler and CLI."""

__version__ = "0.1.0"
