"""Codecs: turn samples into request bodies and response bodies into predictions. Pure, no sockets.

`base` declares the `Codec` protocol and what tensor codecs share; `v2`, `v2_grpc`, `v1` and `template` are the
wire protocols; `factory` picks one from the profile.
"""
