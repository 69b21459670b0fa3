"""The tools on top: the ``mixrec`` command, the demo, evaluation, datasets, Bento and image packaging.

Nothing below (``services``, ``fusion``, ``encoders``, ``mixrec``) imports from here; the Bento
serves without this package.
"""
