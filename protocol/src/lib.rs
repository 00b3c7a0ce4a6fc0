//! Keygate protocol: the API key format and the key-set sync wire format shared by the control plane and the filter.
