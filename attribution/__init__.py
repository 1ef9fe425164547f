"""Attribution: pooled features of clips, and attributors that name the generator (or say unknown)."""
