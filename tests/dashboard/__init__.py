"""The review dashboard: its data layer, its pages (Streamlit AppTest) and the app in a real browser."""
