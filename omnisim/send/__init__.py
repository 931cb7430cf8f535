"""The production sender (a later issue): the same policies, real I/O."""
