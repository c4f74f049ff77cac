"""Media files the project writes: one video writer (:mod:`tasks.media.video_writer`) below every concern."""
