"""The contracts every part of tfface shares: image decoding (:mod:`images`), the named
standardizations of model inputs (:mod:`preprocessing`) and user-facing errors (:mod:`errors`)."""
