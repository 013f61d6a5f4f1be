"""Master side of the transfer engine: what masterd runs to drive node RPCs.

``coordinator`` runs both ends of each disk's stream in this cluster,
``oneside`` one end (inter-cluster moves) and ``policy`` resolves bandwidth
limits and I/O priority into each side's RPC options.  Nothing here imports
:mod:`ganeti.transfer.node`.
"""
