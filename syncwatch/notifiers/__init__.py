"""Notifiers: small classes with `async send(batch)` that raise DeliveryError on failure.

`registry` lists the kinds; nothing outside it (and the commands that wire notifiers) needs
to import a notifier module.
"""
