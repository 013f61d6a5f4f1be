"""ganeti: a Ganeti-style cluster manager with a first-class backup subsystem.

The source directory is ``lib/``; it is installed (and imported) as the
package ``ganeti`` so that module paths match the ones administrators know.
"""

__version__ = "0.1.0"
