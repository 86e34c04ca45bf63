"""The ``headstrong`` command: each sub-command parses, calls one public function, prints."""
