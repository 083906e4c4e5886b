"""The seed's ``app.system`` package (a shim over :mod:`celflow`)."""
