channel_routing: list = []
