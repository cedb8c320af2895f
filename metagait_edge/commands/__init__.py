"""Sub-commands of the ``metagait-edge`` CLI, one module each (see ``metagait_edge.cli``)."""
