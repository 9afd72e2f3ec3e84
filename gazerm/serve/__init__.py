"""A saved reward model served over HTTP: the JSON API (``api``, no Ray needed) and its Ray Serve
deployment with request batching (``deployment``), started by ``gazerm serve`` or a KubeRay RayService."""
