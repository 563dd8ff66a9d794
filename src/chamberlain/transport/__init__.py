"""How clients reach the gateway besides plain TCP: a Unix socket only allowed local users can use."""
