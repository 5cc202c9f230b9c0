"""The web console: plain ES modules, CSS and one HTML page served from the package
(``static/``), talking to the same ``/v1`` API as any client (``docs/console.md``)."""
