"""The agent's configuration schema: one typed section per subsystem.

Shared by the agent (its ``--config`` file, and the dynamic configuration it
applies without a restart) and the controller (which validates an SRE's
``AdminQoSConfiguration`` before any node sees it): the same classes, the same
rules, the same messages naming the field."""
