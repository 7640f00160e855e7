"""Applications built on dicomio: the command line and the reference Q/R archive.

``dicomio.apps.cli`` is the ``dicomio`` command (echoscu, storescu, findscu, getscu, movescu,
storescp, qrscp); ``dicomio.apps.archive`` is the SQLite-indexed archive behind ``qrscp``, and
``dicomio.apps.matching`` its pure Query/Retrieve matching (PS3.4 Annex C).
"""
