"""The diagnostics bundle: a zip a user can share when something is wrong.

``bundle`` builds it (``export_bundle``); ``parts`` and ``redis_parts``
collect the facts (counts, sizes, ids, versions); ``learn`` finds the
secrets and recent content to scrub; ``redact`` scrubs every byte;
``util`` holds the small helpers they share.
"""
