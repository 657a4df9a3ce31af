"""hubmerge's web app: ``python app.py`` serves it locally; on a Hugging Face Space it is the entry point.

Set HF_ENDPOINT to use a Hub-compatible server other than huggingface.co (e.g. ``hubmerge hub serve``).
"""

from hubmerge.ui import launch_app

if __name__ == "__main__":
    launch_app()
