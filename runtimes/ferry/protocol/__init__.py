"""Protocol codecs that know no transport: dicts and bytes in, numpy tensors out, and back."""
