"""Building blocks of the generated demo catalog (see ``tools.demo.catalog`` for the entry point).

categories  the latent interest categories and their text / visual / sound styles
text        titles, descriptions and tags
images      PIL scenes: product photos, cover art, video frames
sound       numpy-synthesised music clips; WAV / FLAC / Ogg Opus writers
video       MP4 (MPEG-4 video + AAC) clips
users       users with hidden tastes and their implicit feedback
"""
