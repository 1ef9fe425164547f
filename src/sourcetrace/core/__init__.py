"""The bottom layer: errors, atomic files, naming rules, audio input, mel conventions, file schemas,
the plug-in registry and device choice. It imports nothing else of sourcetrace (checked by the
layer contracts in `.importlinter`)."""
